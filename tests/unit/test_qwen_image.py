"""Qwen-Image text-to-image, tiny, through the real loading path (save_pretrained ->
from_pretrained) and the engine that replicas run. Tiny models make noise: the tests
check sizes, determinism per seed, batching equivalence, true CFG and previews."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from serve_app.config import ModelConfig
from serve_app.models.engine import ImageTask, ModelEngine
from serve_app.models.spec import GenerationSpec, PartialImage


@pytest.fixture(scope="module")
def engine(tiny_cache) -> ModelEngine:
    config = ModelConfig.model_validate(
        {
            "name": "qwen-image-unit",
            "family": "qwen-image",
            "path": "tiny:qwen-image",
            "dtype": "float32",
            "device": "cpu",
            "defaults": {"size": "64x64", "steps": 2, "guidance_scale": 4.0},
            "limits": {"max_n": 4, "min_side": 32, "max_side": 256, "max_pixels": 65536},
            "previews": {"scale": 1.0},
        }
    )
    return ModelEngine(config, tiny_cache)


def spec(prompt="a red bicycle", seeds=(1,), width=64, height=48, guidance=4.0, negative=None):
    return GenerationSpec(prompt, negative, width, height, 2, guidance, tuple(seeds))


def test_output_has_the_asked_size_and_repeats_per_seed(engine):
    first = engine.run_batch([spec(seeds=(7,))])[0].pixels[0]
    again = engine.run_batch([spec(seeds=(7,))])[0].pixels[0]
    other = engine.run_batch([spec(seeds=(8,))])[0].pixels[0]
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_batched_requests_equal_solo_runs(engine):
    """Prompts of different lengths share a call (padded, masked); each image is its
    solo run's, within one level of rounding."""
    a = spec("a cup", seeds=(11,))
    b = spec("a long description of a ceramic teapot on a wooden table", seeds=(12, 13))
    together = engine.run_batch([a, b])
    assert [r.batch_images for r in together] == [3, 3]
    alone = [engine.run_batch([request])[0] for request in (a, b)]
    for batched, solo in zip(together, alone, strict=True):
        for mine, theirs in zip(batched.pixels, solo.pixels, strict=True):
            assert np.abs(mine.astype(int) - theirs).max() <= 1


def test_true_cfg_follows_guidance_and_the_negative_prompt(engine):
    plain = engine.run_batch([spec(seeds=(3,))])[0].pixels[0]
    negative = engine.run_batch([spec(seeds=(3,), negative="blurry")])[0].pixels[0]
    off = engine.run_batch([spec(seeds=(3,), guidance=1.0, negative="blurry")])[0].pixels[0]
    off_plain = engine.run_batch([spec(seeds=(3,), guidance=1.0)])[0].pixels[0]
    assert not np.array_equal(plain, negative)
    # CFG off: the negative prompt is not used at all.
    assert np.array_equal(off, off_plain)


def test_previews_of_the_packed_latents_leave_the_image_as_it_was(engine):
    seen: list[PartialImage] = []
    request = replace(spec(seeds=(2,)), steps=3, partial_images=2)
    streamed = engine.run_batch([ImageTask(request, seen.append)])[0]
    plain = engine.run_batch([replace(request, partial_images=0)])[0]
    assert np.array_equal(streamed.pixels[0], plain.pixels[0])
    assert [(p.step, p.width, p.height) for p in seen] == [(1, 64, 48), (2, 64, 48)]
