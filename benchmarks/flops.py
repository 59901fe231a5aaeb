"""Model FLOPs per image, counted on a real pipeline call, and the card's measured peak."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from serve_app.models.base import TextToImageFamily
from serve_app.models.spec import GenerationSpec

aten = torch.ops.aten


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# PyTorch counts the CUDA attention kernels but not the CPU one.
EXTRA_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def pipeline_flops(
    family: TextToImageFamily, pipeline: Any, spec: GenerationSpec
) -> tuple[int, dict[str, int]]:
    """FLOPs of one whole pipeline call for `spec` (text encoders, every denoiser step with
    CFG's doubled batch where the pipeline uses it, VAE decode), per image, and split by
    the top-level module that spent them."""
    counter = FlopCounterMode(display=False, depth=1, custom_mapping=EXTRA_FORMULAS)
    with counter, torch.inference_mode():
        family.run(pipeline, [spec])
    images = len(spec.seeds)
    by_module = {  # top-level modules only: the pipeline's components
        name: sum(counts.values()) // images
        for name, counts in counter.get_flop_counts().items()
        if name != "Global" and "." not in name
    }
    return counter.get_total_flops() // images, by_module


def matmul_peak_tflops(
    device: str, size: int | None = None, repeats: int = 20
) -> tuple[float, str]:
    """Median TFLOP/s of a large square matmul on random data: bf16 on a GPU, float32 on CPU."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    size = size or (8192 if device == "cuda" else 1024)
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    for _ in range(3):  # warm-up: library handles, clocks
        a @ b
    seconds = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            a @ b
            seconds.append(time.perf_counter() - began)
    flops = 2 * size**3
    return round(flops / statistics.median(seconds) / 1e12, 3), str(dtype).removeprefix("torch.")
