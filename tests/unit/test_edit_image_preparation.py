"""Preparing an edit's input images (serve_app/service/image_inputs.py), in-process:
every form of input, working sizes and masks."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from serve_app.config import ImageInputConfig, ModelConfig
from serve_app.errors import InvalidRequestError, PayloadTooLargeError
from serve_app.protocol import ImageReference
from serve_app.service.image_inputs import ImageInputs, ImageSource

MODEL = ModelConfig.model_validate(
    {
        "name": "edit",
        "family": "qwen-image-edit",
        "path": "tiny:qwen-image-edit",
        "defaults": {"size": "256x256"},
        "limits": {"min_side": 64, "max_side": 512, "max_pixels": 262144},
    }
)


def png(width: int, height: int, mode: str = "RGB", color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def inputs() -> ImageInputs:
    return ImageInputs(ImageInputConfig(max_bytes=1 << 20))


async def test_auto_size_keeps_the_aspect_at_the_working_area(inputs):
    prepared = await inputs.prepare(
        MODEL, [ImageSource("image[0]", upload=png(640, 480))], None, "auto"
    )
    assert prepared.size == "288x224"
    assert prepared.images[0].shape == (224, 288, 3)


async def test_explicit_size_crops_to_that_aspect(inputs):
    prepared = await inputs.prepare(
        MODEL, [ImageSource("image[0]", upload=png(640, 480))], None, "256x256"
    )
    assert prepared.images[0].shape == (256, 256, 3)
    assert tuple(prepared.images[0][128, 128]) == (200, 30, 30)


async def test_every_form_of_the_same_image_gives_the_same_pixels(inputs):
    data = png(128, 128)
    encoded = base64.b64encode(data).decode()
    sources = [
        ImageSource("image[0]", upload=data),
        ImageSource("images[0]", reference=ImageReference(b64_json=encoded)),
        ImageSource(
            "images[0]", reference=ImageReference(image_url="data:image/png;base64," + encoded)
        ),
    ]
    arrays = [(await inputs.prepare(MODEL, [s], None, "auto")).images[0] for s in sources]
    assert all(np.array_equal(arrays[0], other) for other in arrays[1:])


async def test_references_after_the_first_keep_their_own_aspect(inputs):
    sources = [
        ImageSource("image[0]", upload=png(256, 256)),
        ImageSource("image[1]", upload=png(512, 256)),
    ]
    prepared = await inputs.prepare(MODEL, sources, None, "auto")
    assert [image.shape[:2] for image in prepared.images] == [(256, 256), (176, 368)]


async def test_mask_transparency_marks_the_editable_area(inputs):
    mask = Image.new("RGBA", (128, 128), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 64, 128))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    prepared = await inputs.prepare(
        MODEL,
        [ImageSource("image[0]", upload=png(128, 128))],
        ImageSource("mask", upload=buffer.getvalue()),
        "auto",
    )
    assert prepared.mask is not None and prepared.mask.shape == (256, 256)
    assert prepared.mask[:, :120].min() == 255 and prepared.mask[:, 136:].max() == 0


async def test_mask_must_match_the_image(inputs):
    with pytest.raises(InvalidRequestError) as info:
        await inputs.prepare(
            MODEL,
            [ImageSource("image[0]", upload=png(128, 128))],
            ImageSource("mask", upload=png(64, 64, "RGBA", (0, 0, 0, 0))),
            "auto",
        )
    assert info.value.code == "mask_size_mismatch"


async def test_size_outside_the_model_limits_is_refused(inputs):
    with pytest.raises(InvalidRequestError) as info:
        await inputs.prepare(
            MODEL, [ImageSource("image[0]", upload=png(64, 64))], None, "1024x1024"
        )
    assert info.value.code == "invalid_size"


async def test_byte_limit_applies_to_every_form(inputs):
    small = ImageInputs(ImageInputConfig(max_bytes=2048))
    big = png(256, 256, color=(1, 2, 3))
    noisy = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (128, 128, 3), np.uint8)).save(
        noisy, format="PNG"
    )
    for source in (
        ImageSource("image[0]", upload=noisy.getvalue()),
        ImageSource(
            "images[0]",
            reference=ImageReference(b64_json=base64.b64encode(noisy.getvalue()).decode()),
        ),
    ):
        with pytest.raises(PayloadTooLargeError):
            await small.load(source)
    assert (await inputs.load(ImageSource("image[0]", upload=big))).size == (256, 256)
