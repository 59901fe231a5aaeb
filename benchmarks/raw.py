"""Baseline 1: the raw diffusers pipeline called in-process, no HTTP, no queue.

At a given batch size this is the ceiling for serving overhead: the same pipeline call the
service makes, with nothing around it. The model is loaded through the project's own family
loaders, so it is the same checkpoint, dtype and call arguments the service uses.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.stats import Row, measured_row
from serve_app.config import ModelConfig, parse_size
from serve_app.models.loading import LoadedModel, load_model
from serve_app.models.spec import GenerationSpec


@contextmanager
def loaded_model(config: ModelConfig, tiny_cache: Path) -> Iterator[LoadedModel]:
    """The model for the length of the block; its memory is handed back after it."""
    loaded = load_model(config, tiny_cache)
    try:
        yield loaded
    finally:
        del loaded
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def batch_specs(
    config: ModelConfig, size: str, steps: int, batch: int, first_seed: int = 0
) -> list[GenerationSpec]:
    """`batch` one-image requests the service would put in one pipeline call."""
    width, height = parse_size(size)
    return [
        GenerationSpec(
            prompt=f"benchmark prompt {first_seed + i}",
            negative_prompt=config.defaults.negative_prompt,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=config.defaults.guidance_scale,
            seeds=(first_seed + i,),
        )
        for i in range(batch)
    ]


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_raw(
    loaded: LoadedModel,
    config: ModelConfig,
    batch: int,
    calls: int,
    size: str,
    steps: int,
    progress: bool = False,
) -> Row:
    """`calls` timed pipeline calls of `batch` images each, after one untimed call."""
    family, pipeline = loaded.family, loaded.pipeline
    family.run(pipeline, batch_specs(config, size, steps, batch))  # lazy init, autotune
    _synchronize(loaded.device)
    latencies_ms = []
    bar = tqdm(total=calls, desc=f"raw-diffusers b={batch}", unit="call", disable=not progress)
    started = time.perf_counter()
    for call in range(calls):
        began = time.perf_counter()
        # run() returns host arrays, so each call's time includes finishing on the GPU.
        family.run(pipeline, batch_specs(config, size, steps, batch, call * batch))
        latencies_ms.append((time.perf_counter() - began) * 1000)
        bar.update()
    seconds = time.perf_counter() - started
    bar.close()
    return measured_row(
        system="raw-diffusers",
        mode="in-process",
        concurrency=1,
        max_batch_size=batch,
        requests=calls * batch,
        errors=0,
        seconds=seconds,
        images=calls * batch,
        latencies_ms=latencies_ms,
        batch_images={batch: calls * batch},
    )
