"""Encode generated pixels into the response formats. No metadata is written."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image

OutputFormat = Literal["png", "jpeg", "webp"]
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def encode_image(
    pixels: np.ndarray, fmt: OutputFormat | str, compression: int | None = None
) -> bytes:
    """HxWx3 uint8 -> file bytes. `compression` is the OpenAI knob: 0-100, for jpeg/webp."""
    image = Image.fromarray(pixels, mode="RGB")
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=6)
    else:
        quality = 100 if compression is None else compression
        image.save(buffer, format=PIL_FORMATS[fmt], quality=quality)
    return buffer.getvalue()
