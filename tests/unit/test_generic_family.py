"""The generic `diffusers` families: a checkpoint served by AutoPipeline with no code of
its own (the tiny build is a Stable Diffusion checkpoint, loaded like a real one).
Tiny models make noise: the tests check sizes, determinism, what the pipeline takes,
requests run alone unless the config vouches for shared calls, and the image-to-image
twin with a mask."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.config import AppConfig, ModelConfig
from serve_app.errors import ErrorCode
from serve_app.families import Batching
from serve_app.models.engine import ModelEngine
from serve_app.models.spec import EditSpec, GenerationSpec
from serve_app.service.catalog import model_card
from tests.helpers import local_args, tiny_model_config


def generic(family="diffusers", shared_calls=None) -> ModelConfig:
    batching = {"max_batch_size": 4}
    if shared_calls is not None:
        batching["shared_calls"] = shared_calls
    return tiny_model_config(family, batching=batching)


def spec(seed=1, prompt="a lamp", negative=None) -> GenerationSpec:
    return GenerationSpec(prompt, negative, 64, 48, 2, 5.0, (seed,))


@pytest.fixture(scope="module")
def alone(tiny_cache) -> ModelEngine:
    return ModelEngine(generic(), tiny_cache)


@pytest.fixture(scope="module")
def shared(tiny_cache) -> ModelEngine:
    return ModelEngine(generic(shared_calls=True), tiny_cache)


def test_a_model_declared_in_config_alone_serves_images(alone):
    first = alone.run_batch([spec(7)])[0].pixels[0]
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, alone.run_batch([spec(7)])[0].pixels[0])
    assert not np.array_equal(first, alone.run_batch([spec(8)])[0].pixels[0])
    # The checkpoint's pipeline takes a negative prompt, so it reaches it.
    negative = alone.run_batch([spec(7, negative="blurry")])[0].pixels[0]
    assert not np.array_equal(first, negative)


def test_requests_run_alone_unless_the_config_vouches_for_shared_calls(alone, shared):
    requests = [spec(11, "a cup"), spec(12, "a long prompt about a green teapot")]
    assert [r.batch_images for r in alone.run_batch(requests)] == [1, 1]
    together = shared.run_batch(requests)
    assert [r.batch_images for r in together] == [2, 2]
    for request, batched in zip(requests, together, strict=True):
        solo = alone.run_batch([request])[0].pixels[0]
        assert np.abs(batched.pixels[0].astype(int) - solo).max() <= 1


def test_the_catalog_and_config_follow_the_declaration():
    assert generic().batching_mode is Batching.PER_REQUEST
    assert model_card(generic(shared_calls=True)).capabilities.batching.mode == "shared"
    with pytest.raises(ValueError, match="cannot share pipeline calls"):
        ModelConfig.model_validate(
            {"name": "g", "family": "glm-image", "path": "x", "batching": {"shared_calls": True}}
        )
    args = local_args()
    args["models"].append(generic().model_dump(mode="json"))
    assert AppConfig.model_validate(args).model("diffusers-unit").traits.task == "text-to-image"


def test_a_negative_prompt_the_pipeline_cannot_take_is_a_400(alone, monkeypatch):
    import serve_app.models.generic as generic_module

    monkeypatch.setattr(generic_module, "accepted_arguments", lambda _pipeline: {"prompt"})
    result = alone.run_batch([spec(negative="blurry")])[0]
    assert getattr(result, "code", None) == ErrorCode.UNSUPPORTED_PARAMETER
    assert result.param == "negative_prompt"


def test_image_to_image_keeps_the_working_size_and_the_mask(tiny_cache):
    engine = ModelEngine(generic("diffusers-image-to-image"), tiny_cache)
    picture = np.random.RandomState(0).randint(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[:, 32:] = 255
    edit = EditSpec("make it blue", None, (picture,), mask, 2, 5.0, None, (3,))
    edited = engine.run_batch([edit])[0].pixels[0]
    assert edited.shape == (48, 64, 3)
    assert np.array_equal(edited[:, :32], picture[:, :32])
    assert not np.array_equal(edited[:, 32:], picture[:, 32:])
