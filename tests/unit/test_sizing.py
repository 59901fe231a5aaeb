"""Choosing a size from a template's aspect hint, and checking sizes against model limits."""

from __future__ import annotations

import pytest

from serve_app.config import ModelConfig
from serve_app.errors import InvalidRequestError
from serve_app.service.sizing import check_size, requested_size, size_from_aspect


def make_model(**overrides) -> ModelConfig:
    fields = {
        "name": "m",
        "family": "z-image",
        "path": "tiny:z-image",
        "defaults": {"size": "256x256"},
        "limits": {"min_side": 64, "max_side": 512, "max_pixels": 262144},
        "batching": {"max_batch_size": 8},
    }
    fields.update(overrides)
    return ModelConfig.model_validate(fields)


@pytest.fixture
def model() -> ModelConfig:
    return make_model()


@pytest.mark.parametrize("multiple", [8, 16, 32])
@pytest.mark.parametrize("hint", ["1024x576", "576x1024", "1024x1024", "800x600", "512x1536"])
def test_size_from_aspect_keeps_shape_multiple_and_limits(model, hint, multiple):
    width, height = size_from_aspect(hint, model, multiple)
    hint_w, hint_h = (int(v) for v in hint.split("x"))
    assert width % multiple == 0 and height % multiple == 0
    assert min(width, height) >= 64 and max(width, height) <= 512
    # Aspect is kept to within one rounding step on each side.
    assert abs(width / height - hint_w / hint_h) < (hint_w / hint_h) * 2 * multiple / min(
        width, height
    )
    check_size(width, height, model, multiple)


def test_size_from_aspect_uses_default_area(model):
    assert size_from_aspect("1024x1024", model, 16) == (256, 256)
    assert size_from_aspect("1024x576", model, 16) == (336, 192)
    assert size_from_aspect("576x1024", model, 16) == (192, 336)


def test_size_from_aspect_clamps_extreme_aspects(model):
    width, height = size_from_aspect("64x4096", model, 16)
    assert (width, height) == (64, 512)


def test_size_from_aspect_rejects_malformed_hint(model):
    with pytest.raises(ValueError):
        size_from_aspect("wide", model, 16)


@pytest.mark.parametrize(("hint", "multiple"), [("1024x576", 32), ("1000x700", 16)])
def test_size_from_aspect_stays_within_max_pixels(hint, multiple):
    model = make_model(
        family="glm-image",
        path="tiny:glm-image",
        defaults={"size": "1024x1024"},
        limits={"max_side": 2048, "max_pixels": 1024 * 1024},
    )
    width, height = size_from_aspect(hint, model, multiple)
    assert width * height <= 1024 * 1024
    check_size(width, height, model, multiple)


@pytest.mark.parametrize(("width", "height"), [(64, 64), (512, 512), (256, 512), (64, 512)])
def test_check_size_accepts_sizes_within_limits(model, width, height):
    check_size(width, height, model, 16)  # raises on failure


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        (250, 256, "multiples of 16"),
        (256, 264, "multiples of 16"),
        (48, 256, "between 64 and 512"),
        (256, 528, "between 64 and 512"),
        (1024, 1024, "between 64 and 512"),
    ],
)
def test_check_size_refuses(model, width, height, reason):
    with pytest.raises(InvalidRequestError) as info:
        check_size(width, height, model, 16)
    assert info.value.code == "invalid_size"
    assert info.value.param == "size"
    assert reason in info.value.message
    assert f"{width}x{height}" in info.value.message


def test_check_size_refuses_too_many_pixels():
    model = make_model(limits={"min_side": 64, "max_side": 512, "max_pixels": 256 * 256})
    check_size(256, 256, model, 16)
    with pytest.raises(InvalidRequestError) as info:
        check_size(512, 256, model, 16)
    assert info.value.code == "invalid_size"
    assert "at most 65536 pixels" in info.value.message


def test_requested_size_parses():
    assert requested_size("512x256") == (512, 256)


@pytest.mark.parametrize("size", ["", "auto", "big", "512", "512x", "x512", "512*512", "9" * 500])
def test_requested_size_rejects_garbage(size):
    with pytest.raises(InvalidRequestError) as info:
        requested_size(size)
    assert info.value.code == "invalid_size"
    assert info.value.param == "size"
    assert len(info.value.message) < 120  # long input is cut short in the message
