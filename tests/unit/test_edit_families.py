"""Every edit family, tiny, through the real loading path (save_pretrained ->
from_pretrained) and the engine that replicas run. Tiny models make noise: the tests
check sizes, determinism per seed, batching equivalence, masks and grouping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serve_app.config import ModelConfig
from serve_app.families import Batching
from serve_app.models.engine import ModelEngine
from serve_app.models.spec import EditSpec
from tests.helpers import tiny_model_config

EDIT_FAMILIES = [
    "instruct-pix2pix",
    "qwen-image-edit",
    "qwen-image-edit-plus",
    "longcat-image-edit",
    "flux-kontext",
]


def edit_model(family: str) -> ModelConfig:
    return tiny_model_config(family, guidance_scale=4.0)


def picture(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)


def edit(
    prompt="make the label dark blue",
    images=None,
    seeds=(1,),
    mask=None,
    guidance=4.0,
) -> EditSpec:
    images = images if images is not None else (picture(0),)
    return EditSpec(prompt, None, tuple(images), mask, 2, guidance, None, tuple(seeds))


@pytest.fixture(scope="module", params=EDIT_FAMILIES)
def engine(request, tiny_cache):
    return ModelEngine(edit_model(request.param), tiny_cache)


def test_output_has_the_working_size_and_repeats_per_seed(engine):
    first = engine.run_batch([edit(seeds=(7,))])[0].pixels[0]
    again = engine.run_batch([edit(seeds=(7,))])[0].pixels[0]
    other = engine.run_batch([edit(seeds=(8,))])[0].pixels[0]
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_image_i_of_a_request_equals_a_solo_request_seeded_s_plus_i(engine):
    pair = engine.run_batch([edit(seeds=(3, 4))])[0]
    solo = engine.run_batch([edit(seeds=(4,))])[0]
    assert len(pair.pixels) == 2 and pair.batch_images == 2
    assert np.abs(pair.pixels[1].astype(int) - solo.pixels[0]).max() <= 1


def test_batched_requests_equal_solo_runs_or_run_alone(engine):
    a = edit("replace the price with 79", images=(picture(1),), seeds=(11,))
    b = edit("make it red", images=(picture(2),), seeds=(12,))
    together = engine.run_batch([a, b])
    alone = [engine.run_batch([spec])[0] for spec in (a, b)]
    family = engine.model.family
    expected = 2 if family.traits.batching is Batching.SHARED else 1
    assert [r.batch_images for r in together] == [expected, expected]
    for batched, solo in zip(together, alone, strict=True):
        assert np.abs(batched.pixels[0].astype(int) - solo.pixels[0]).max() <= 1


def test_mask_keeps_every_pixel_outside_it(engine):
    original = picture(5)
    mask = np.zeros(original.shape[:2], dtype=np.uint8)
    mask[:, :32] = 255
    unmasked = engine.run_batch([edit(images=(original,), seeds=(2,))])[0].pixels[0]
    masked = engine.run_batch([edit(images=(original,), seeds=(2,), mask=mask)])[0].pixels[0]
    assert np.array_equal(masked[:, 32:], original[:, 32:])
    assert np.array_equal(masked[:, :32], unmasked[:, :32])


def test_different_image_shapes_never_share_a_call(engine):
    wide = edit(images=(picture(1, 48, 64),))
    tall = edit(images=(picture(2, 64, 48),))
    results = engine.run_batch([wide, tall])
    assert [r.batch_images for r in results] == [1, 1]
    assert results[0].pixels[0].shape == (48, 64, 3)
    assert results[1].pixels[0].shape == (64, 48, 3)


def test_qwen_plus_composes_several_reference_images(tiny_cache):
    engine = ModelEngine(edit_model("qwen-image-edit-plus"), tiny_cache)
    refs = (picture(1), picture(2, 64, 64), picture(3, 32, 64))
    one = engine.run_batch([edit(images=refs[:1], seeds=(9,))])[0].pixels[0]
    three = engine.run_batch([edit(images=refs, seeds=(9,))])[0].pixels[0]
    assert three.shape == one.shape == (48, 64, 3)
    # The references condition the result: adding two must change it.
    assert not np.array_equal(one, three)


@pytest.mark.parametrize("family", ["qwen-image-edit", "longcat-image-edit"])
def test_tiny_checkpoints_name_the_upstream_processor_class(tiny_cache, family):
    ModelEngine(edit_model(family), tiny_cache)
    folder = next(tiny_cache.glob(f"{family}-v*"))
    index = json.loads((folder / "model_index.json").read_text())
    component = "processor" if family == "qwen-image-edit" else "text_processor"
    assert index[component] == ["transformers", "Qwen2VLProcessor"]
    assert (folder / component / "preprocessor_config.json").is_file()
    assert (folder / component / "tokenizer.json").is_file()


def test_warmup_runs_an_edit_at_the_default_size(tiny_cache):
    engine = ModelEngine(edit_model("instruct-pix2pix"), tiny_cache)
    engine.warmup()
    assert engine.health()["task"] == "image-edit"
