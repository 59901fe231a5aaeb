"""LoRA adapters on a compiled denoiser: swapped into one slot in place, never recompiling
it. The tiny SD model is compiled with torch.compile's "eager" backend: Dynamo captures
graphs and guards them as it would for inductor (what recompiles is decided there), with
no kernels to generate on a CPU. Tiny models make noise: the tests check equalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from serve_app.config import AppConfig
from serve_app.errors import ErrorCode
from serve_app.models.adapters import HotSwapAdapters
from serve_app.models.engine import ModelEngine
from serve_app.models.spec import AdapterUse, GenerationSpec
from tests.helpers import local_args, tiny_model_config

RANK = 8


def adapter(seed: int, scale: float = 1.0) -> AdapterUse:
    return AdapterUse(f"tiny-{seed}", f"tiny:{seed}", None, scale)


def spec(seed=1, adapters=()) -> GenerationSpec:
    return GenerationSpec("a red bicycle", None, 64, 64, 2, 5.0, (seed,), adapters=adapters)


def image(engine: ModelEngine, request: GenerationSpec) -> np.ndarray:
    result = engine.run_batch([request])[0]
    assert not isinstance(result, Exception), result
    return result.pixels[0]


def graphs_captured() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def compiled(tiny_cache) -> ModelEngine:
    config = tiny_model_config(
        "stable-diffusion",
        compile=True,
        compile_backend="eager",
        adapters={"max_per_request": 1, "hotswap_rank": RANK},
    )
    return ModelEngine(config, tiny_cache)


@pytest.fixture(scope="module")
def plain(tiny_cache) -> ModelEngine:
    return ModelEngine(tiny_model_config("stable-diffusion"), tiny_cache)


def test_adapters_swap_in_place_without_recompiling(compiled, plain):
    assert isinstance(compiled.adapters, HotSwapAdapters)
    base = image(compiled, spec())
    captured = graphs_captured()
    assert captured > 0  # the denoiser runs compiled

    one = image(compiled, spec(adapters=(adapter(1),)))
    two = image(compiled, spec(adapters=(adapter(2),)))
    half = image(compiled, spec(adapters=(adapter(1, 0.5),)))
    assert compiled.health()["loras"] == ["tiny-1"]
    off = image(compiled, spec(adapters=(adapter(1, 0.0),)))
    again = image(compiled, spec())
    assert graphs_captured() == captured  # new adapters, scales, none: no new graph

    assert len({a.tobytes() for a in (base, one, two, half)}) == 4
    # Scale 0 and no adapter are the base model exactly (the slot adds zeros).
    assert np.array_equal(off, base) and np.array_equal(again, base)
    assert np.array_equal(base, image(plain, spec()))
    # The slot is the adapter: the image of the uncompiled model loading it the usual
    # way, within a level (the rank is zero-padded from 4 to 8).
    for use, swapped in ((adapter(1), one), (adapter(2), two), (adapter(1, 0.5), half)):
        usual = image(plain, spec(adapters=(use,)))
        assert np.abs(swapped.astype(int) - usual).max() <= 1
    assert compiled.adapters.loads == 3 and compiled.adapters.evictions == 2


def test_an_adapter_the_slot_cannot_take_is_refused_and_the_slot_stays_sound(
    compiled, tiny_cache, tmp_path
):
    """Rank 16 in a rank-8 slot: refused before any weight moves; the model goes on."""
    pipeline = compiled.model.pipeline
    denoiser = pipeline.unet._orig_mod
    layers = {}
    for name, module in denoiser.named_modules():
        if name.endswith("attn1.to_q"):
            linear = module.base_layer
            layers[f"{name}.lora_A.weight"] = torch.ones(16, linear.in_features)
            layers[f"{name}.lora_B.weight"] = torch.ones(linear.out_features, 16)
    assert layers
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=layers)
    wide = AdapterUse("wide", str(tmp_path), None, 1.0)

    base = image(compiled, spec(7))
    captured = graphs_captured()
    refused, fine = compiled.run_batch([spec(7, (wide,)), spec(7)])
    assert getattr(refused, "code", None) == ErrorCode.LORA_UNAVAILABLE
    assert "hotswap_rank" in str(refused)
    assert np.array_equal(fine.pixels[0], base)
    assert image(compiled, spec(7, (adapter(3),))).tobytes() != base.tobytes()
    assert np.array_equal(image(compiled, spec(7)), base)
    assert graphs_captured() == captured


def test_a_compiled_model_with_loras_must_say_how_they_swap():
    args = local_args()
    sd = next(m for m in args["models"] if m["name"] == "sd-tiny")
    sd["compile"] = True
    with pytest.raises(ValueError, match="adapters.hotswap_rank"):
        AppConfig.model_validate(args)
    sd["adapters"] = {"hotswap_rank": 16}
    with pytest.raises(ValueError, match="max_per_request: 1"):
        AppConfig.model_validate(args)
    sd["adapters"]["max_per_request"] = 1
    model = AppConfig.model_validate(args).model("sd-tiny")
    assert model.hot_swaps_adapters and model.adapters_held == 1
