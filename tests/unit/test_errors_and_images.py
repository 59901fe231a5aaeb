"""Errors that pickle across Ray calls, and image encoding without metadata."""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from serve_app.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    ServiceUnavailableError,
)
from serve_app.images import encode_image

# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [
        ServiceError,
        InvalidRequestError,
        NotFoundError,
        PayloadTooLargeError,
        ServiceUnavailableError,
    ],
)
def test_service_errors_survive_pickle(cls):
    error = cls("size 1x1 is too small", code="invalid_size", param="size")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert copy.message == "size 1x1 is too small"
    assert str(copy) == "size 1x1 is too small"
    assert copy.code == "invalid_size"
    assert copy.param == "size"
    assert copy.status_code == cls.status_code
    assert copy.error_type == cls.error_type


def test_error_without_code_and_param_survives_pickle():
    copy = pickle.loads(pickle.dumps(NotFoundError("gone")))
    assert (copy.message, copy.code, copy.param) == ("gone", None, None)


def test_error_statuses():
    assert InvalidRequestError("x").status_code == 400
    assert NotFoundError("x").status_code == 404
    assert PayloadTooLargeError("x").status_code == 413
    assert ServiceUnavailableError("x").status_code == 503
    assert ServiceUnavailableError("x").retry_after_s >= 1
    assert issubclass(InvalidRequestError, ServiceError)


# --- images ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    # 24 wide, 16 high: a non-square picture catches width/height swaps.
    return np.random.default_rng(0).integers(0, 256, size=(16, 24, 3), dtype=np.uint8)


def png_chunk_types(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        types.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return types


@pytest.mark.parametrize(
    ("fmt", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")]
)
def test_encoded_image_decodes_to_right_size_and_format(pixels, fmt, pil_format):
    data = encode_image(pixels, fmt)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == pil_format
        assert image.size == (24, 16)
        assert image.mode == "RGB"


def test_png_is_lossless(pixels):
    with Image.open(io.BytesIO(encode_image(pixels, "png"))) as image:
        assert np.array_equal(np.asarray(image), pixels)


def test_png_encoding_is_deterministic(pixels):
    assert encode_image(pixels, "png") == encode_image(pixels.copy(), "png")


def test_png_has_no_metadata_chunks(pixels):
    data = encode_image(pixels, "png")
    assert set(png_chunk_types(data)) == {b"IHDR", b"IDAT", b"IEND"}
    with Image.open(io.BytesIO(data)) as image:
        assert not image.info.get("exif")
        assert not getattr(image, "text", {})


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_lossy_formats_have_no_exif(pixels, fmt):
    data = encode_image(pixels, fmt)
    assert b"Exif" not in data
    with Image.open(io.BytesIO(data)) as image:
        assert len(image.getexif()) == 0
        assert "xmp" not in image.info


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_compression_lowers_quality_and_size(fmt):
    noisy = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    assert len(encode_image(noisy, fmt, compression=10)) < len(encode_image(noisy, fmt))
