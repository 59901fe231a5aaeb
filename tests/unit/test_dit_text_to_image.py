"""Qwen-Image and FLUX.1 text-to-image, tiny, through the real loading path
(save_pretrained -> from_pretrained) and the engine that replicas run. Both pack 2x2
latent patches into sequences. Tiny models make noise: the tests check sizes,
determinism per seed, batching equivalence, guidance and previews."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from serve_app.models.engine import ImageTask, ModelEngine
from serve_app.models.spec import GenerationSpec, PartialImage
from tests.helpers import tiny_model_config

GUIDANCE = {"qwen-image": 4.0, "flux": 3.5}


def engine_for(family: str, tiny_cache) -> ModelEngine:
    config = tiny_model_config(family, GUIDANCE[family], previews={"scale": 1.0})
    return ModelEngine(config, tiny_cache)


@pytest.fixture(scope="module", params=sorted(GUIDANCE))
def engine(request, tiny_cache) -> ModelEngine:
    return engine_for(request.param, tiny_cache)


@pytest.fixture(scope="module")
def qwen(tiny_cache) -> ModelEngine:
    return engine_for("qwen-image", tiny_cache)


@pytest.fixture(scope="module")
def flux(tiny_cache) -> ModelEngine:
    return engine_for("flux", tiny_cache)


def spec(prompt="a red bicycle", seeds=(1,), guidance=4.0, negative=None):
    return GenerationSpec(prompt, negative, 64, 48, 2, guidance, tuple(seeds))


def test_output_has_the_asked_size_and_repeats_per_seed(engine):
    first = engine.run_batch([spec(seeds=(7,))])[0].pixels[0]
    again = engine.run_batch([spec(seeds=(7,))])[0].pixels[0]
    other = engine.run_batch([spec(seeds=(8,))])[0].pixels[0]
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_batched_requests_equal_solo_runs(engine):
    """Prompts of different lengths share a call (Qwen-Image pads and masks them, T5 pads
    every prompt to one length); each image is its solo run's, within one level."""
    a = spec("a cup", seeds=(11,))
    b = spec("a long description of a ceramic teapot on a wooden table", seeds=(12, 13))
    together = engine.run_batch([a, b])
    assert [r.batch_images for r in together] == [3, 3]
    alone = [engine.run_batch([request])[0] for request in (a, b)]
    for batched, solo in zip(together, alone, strict=True):
        for mine, theirs in zip(batched.pixels, solo.pixels, strict=True):
            assert np.abs(mine.astype(int) - theirs).max() <= 1


def test_previews_of_the_packed_latents_leave_the_image_as_it_was(engine):
    seen: list[PartialImage] = []
    request = replace(spec(seeds=(2,)), steps=3, partial_images=2)
    streamed = engine.run_batch([ImageTask(request, seen.append)])[0]
    plain = engine.run_batch([replace(request, partial_images=0)])[0]
    assert np.array_equal(streamed.pixels[0], plain.pixels[0])
    assert [(p.step, p.width, p.height) for p in seen] == [(1, 64, 48), (2, 64, 48)]


def test_the_final_decode_never_overlaps_a_preview_decode(engine):
    """Previews decode on a worker thread with the pipeline's VAE; Qwen-Image's keeps a
    feature cache per decode, so a preview still decoding when the call decodes its
    images corrupted them (CI saw it). Here every preview decode is slow, so without the
    wait at the last step the final decode would start inside one."""
    vae = engine.model.pipeline.vae
    original = vae.decode
    lock = threading.Lock()
    inside: list[int] = [0]
    seen_inside: list[int] = []

    def watched(*args, **kwargs):
        with lock:
            inside[0] += 1
            seen_inside.append(inside[0])
        try:
            if threading.current_thread().name.startswith("previews"):
                time.sleep(0.5)
            return original(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    previews: list[PartialImage] = []
    request = replace(spec(seeds=(5,)), steps=3, partial_images=2)
    vae.decode = watched
    try:
        streamed = engine.run_batch([ImageTask(request, previews.append)])[0]
    finally:
        del vae.decode  # the class's method again
    assert len(previews) == 2 and len(seen_inside) == 3  # two previews, one final decode
    assert max(seen_inside) == 1
    plain = engine.run_batch([replace(request, partial_images=0)])[0]
    assert np.array_equal(streamed.pixels[0], plain.pixels[0])


def test_qwen_true_cfg_follows_guidance_and_the_negative_prompt(qwen):
    plain = qwen.run_batch([spec(seeds=(3,))])[0].pixels[0]
    negative = qwen.run_batch([spec(seeds=(3,), negative="blurry")])[0].pixels[0]
    off = qwen.run_batch([spec(seeds=(3,), guidance=1.0, negative="blurry")])[0].pixels[0]
    off_plain = qwen.run_batch([spec(seeds=(3,), guidance=1.0)])[0].pixels[0]
    assert not np.array_equal(plain, negative)
    # CFG off: the negative prompt is not used at all.
    assert np.array_equal(off, off_plain)


def test_flux_guidance_is_an_input_of_the_transformer(flux):
    """Distilled guidance: another scale is another image, from the same single call."""
    low = flux.run_batch([spec(seeds=(3,), guidance=1.0)])[0].pixels[0]
    high = flux.run_batch([spec(seeds=(3,), guidance=6.0)])[0].pixels[0]
    assert not np.array_equal(low, high)
