"""Images in and out: decode and validate client images, fit them to a model, encode results.

Input: every endpoint that takes images funnels the client's bytes (base64, data URL,
multipart part, or a fetched URL body) through `decode_image`. It refuses what it should
not decode (wrong format, too many bytes or pixels, animated, truncated, huge EXIF) with
a 4xx `ServiceError`, and returns a fresh RGB (or RGBA) image built from the pixels alone:
no EXIF, ICC, XMP, text chunks or trailing bytes survive. Client bytes are never stored
or echoed, so polyglot files (a PNG with an appended ZIP or HTML) are harmless: only
their pixels go on. Output: `encode_image` writes no metadata either.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from serve_app.errors import (
    ErrorCode,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

OutputFormat = Literal["png", "jpeg", "webp"]
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

INPUT_FORMATS = ("PNG", "JPEG", "WEBP")
# A data URL's declared type must be one of these; "image/jpg" is a common misspelling.
DATA_URL_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/webp"})

_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_OPAQUE_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"})
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, IndexError, EOFError, struct.error)


@dataclass(frozen=True)
class ImageLimits:
    """Caps checked before any pixel is decoded.

    `max_pixels` and `max_side` are compared with the dimensions in the file header.
    Pillow's own decompression-bomb check (warns above `PIL.Image.MAX_IMAGE_PIXELS`,
    about 89 MP) answers 413 as well, so `max_pixels` above that has no effect.
    `max_exif_bytes` caps the one metadata block we parse (for the orientation); a JPEG's
    EXIF segment cannot exceed 64 KiB, so the default refuses only PNG/WebP giant EXIF.
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 10_000
    max_exif_bytes: int = 64 * 1024


# --- encoding -------------------------------------------------------------------------------


def encode_image(
    pixels: np.ndarray, fmt: OutputFormat | str, compression: int | None = None
) -> bytes:
    """HxWx3 uint8 -> file bytes. `compression` is the OpenAI knob: 0-100, for jpeg/webp."""
    image = Image.fromarray(pixels, mode="RGB")
    buffer = io.BytesIO()
    if fmt == "png":
        # Level 1: 2.7x faster than 6 on photo-like images for 15% more bytes.
        image.save(buffer, format="PNG", compress_level=1)
    else:
        quality = 100 if compression is None else compression
        image.save(buffer, format=PIL_FORMATS[fmt], quality=quality)
    return buffer.getvalue()


# --- decoding -------------------------------------------------------------------------------


def decode_image(
    data: bytes, limits: ImageLimits, *, param: str, keep_alpha: bool = False
) -> Image.Image:
    """Client file bytes -> a fresh, upright RGB image without metadata, or a 4xx error.

    Alpha is composited over white unless `keep_alpha` (masks, and images whose
    transparency marks the edit area): models take RGB, white is what a transparent
    canvas looks like in editors and in OpenAI's API, and compositing drops whatever RGB
    values hide under fully transparent pixels. With `keep_alpha` the result is RGBA
    when the file has alpha or a transparent colour, else RGB.
    """
    with warnings.catch_warnings():
        # Local, not a global setting: Pillow's bomb warning becomes a 413 here only.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open_checked(data, limits, param)
    with image:
        try:
            image.load()
        except _DECODE_ERRORS as exc:
            raise _decode_failure(param, exc) from None
        exif_bytes = len(image.info.get("exif") or b"")
        exif_bytes += len(image.info.get("Raw profile type exif") or "")
        if exif_bytes > limits.max_exif_bytes:
            raise _invalid(
                param,
                f"the image's EXIF block is larger than {limits.max_exif_bytes} bytes",
                "image_metadata_too_large",
            )
        upright = _apply_orientation(image)
        return _fresh_pixels(upright, keep_alpha, param)


def decode_base64_image(
    text: str, limits: ImageLimits, *, param: str, keep_alpha: bool = False
) -> Image.Image:
    """A `data:image/<png|jpeg|webp>;base64,...` URL or bare base64 -> `decode_image`.

    The declared type only has to be an allowed image type: the format sniffed from the
    bytes decides how they are decoded (clients often mislabel JPEG as PNG, and the
    result is re-encoded from pixels anyway). Standard alphabet with padding; ASCII
    whitespace (MIME line breaks) is ignored; anything else is `invalid_base64`.
    """
    payload = text
    if text[:5].lower() == "data:":
        header, comma, payload = text[5:].partition(",")
        parts = [part.strip().lower() for part in header.split(";")]
        if not comma or parts[-1] != "base64":
            raise _invalid(param, "a data URL must be base64-encoded", ErrorCode.INVALID_BASE64)
        if parts[0] not in DATA_URL_TYPES:
            raise _unsupported(param, "the data URL's type must be image/png, jpeg or webp")
    encoded_cap = 4 * math.ceil(limits.max_bytes / 3)
    # A cheap bound before copying: whitespace can at most double a sane encoding.
    if len(payload) > 2 * encoded_cap + 64:
        raise _too_large(param, f"the image is larger than {limits.max_bytes} bytes")
    payload = "".join(payload.split())
    if len(payload) > encoded_cap:
        raise _too_large(param, f"the image is larger than {limits.max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(param, "the image is not valid base64", ErrorCode.INVALID_BASE64) from None
    return decode_image(data, limits, param=param, keep_alpha=keep_alpha)


def _open_checked(data: bytes, limits: ImageLimits, param: str) -> Image.Image:
    """Open (header only) and run every check that needs no pixel decoding."""
    if not data:
        raise _invalid(param, "the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise _too_large(param, f"the image is larger than {limits.max_bytes} bytes")
    if _webp_is_truncated(data):
        raise _invalid(param, "the image file is truncated", ErrorCode.IMAGE_TRUNCATED)
    try:
        image = Image.open(io.BytesIO(data), formats=list(INPUT_FORMATS))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _too_large(param, "the image has too many pixels") from None
    except Image.UnidentifiedImageError:
        if data.startswith(_SIGNATURES) or _is_webp(data):
            # The right kind of file, but broken before Pillow could read its header.
            raise _invalid(param, "the image could not be decoded") from None
        raise _unsupported(param, "the image must be a PNG, JPEG or WebP file") from None
    except _DECODE_ERRORS as exc:
        raise _decode_failure(param, exc) from None
    width, height = image.size
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        image.close()
        raise _too_large(
            param,
            f"the image is {width}x{height}; at most {limits.max_side} pixels per side "
            f"and {limits.max_pixels} pixels in all",
        )
    # A camera's multi-picture JPEG (MPO) is a photo plus previews: decode the first.
    if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
        image.close()
        raise _invalid(
            param, "animated images are not supported; send one frame", "animated_image_unsupported"
        )
    return image


def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _webp_is_truncated(data: bytes) -> bool:
    # Pillow's WebP decoder fails on a cut file with a generic "could not create decoder
    # object"; the RIFF header's own length tells the two cases apart.
    return _is_webp(data) and len(data) < int.from_bytes(data[4:8], "little") + 8


def _decode_failure(param: str, exc: Exception) -> InvalidRequestError:
    # Pillow's messages are classified, never echoed: they can quote file contents.
    text = str(exc).lower()
    if "truncated" in text:
        return _invalid(param, "the image file is truncated", ErrorCode.IMAGE_TRUNCATED)
    if isinstance(exc, ValueError) and "too large" in text:
        # PNG text/ICC chunks that decompress past Pillow's MAX_TEXT_CHUNK.
        return _invalid(
            param, "the image's metadata is too large", ErrorCode.IMAGE_METADATA_TOO_LARGE
        )
    return _invalid(param, "the image could not be decoded")


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Turn the pixels upright per EXIF Orientation (the tag is dropped with the rest)."""
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF: show the pixels as stored, as browsers do
        orientation = 1
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def _fresh_pixels(image: Image.Image, keep_alpha: bool, param: str) -> Image.Image:
    """Convert every mode deliberately; return an image that carries pixels only."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Scale 0..65535 to 0..255 (x/257 maps the ends exactly); clipping would flatten.
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(np.rint(wide / 257.0).astype(np.uint8))
    if image.mode in _ALPHA_MODES or (image.mode in _OPAQUE_MODES and "transparency" in image.info):
        converted = image.convert("RGBA")
        if not keep_alpha:
            converted = _over_white(converted)
    elif image.mode in _OPAQUE_MODES:
        # CMYK: Pillow's naive, ICC-agnostic formula; embedded profiles are ignored.
        converted = image.convert("RGB")
    else:
        raise _invalid(param, f"unsupported pixel mode {image.mode}")
    return Image.frombytes(converted.mode, converted.size, converted.tobytes())


def _over_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _invalid(
    param: str, message: str, code: ErrorCode = ErrorCode.INVALID_IMAGE
) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", code=code, param=param)


def _too_large(param: str, message: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{param}: {message}", code=ErrorCode.IMAGE_TOO_LARGE, param=param)


def _unsupported(param: str, message: str) -> UnsupportedMediaTypeError:
    return UnsupportedMediaTypeError(
        f"{param}: {message}", code=ErrorCode.UNSUPPORTED_IMAGE_FORMAT, param=param
    )


# --- fitting and arrays ---------------------------------------------------------------------


def fit_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Center-crop to the target's aspect, then resize (LANCZOS) to exactly width x height."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8. An RGBA image (decoded with keep_alpha) is composited over white."""
    if image.mode == "RGBA":
        image = _over_white(image)
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def mask_to_array(image: Image.Image) -> np.ndarray:
    """HxW uint8 where 255 = edit here, 0 = keep (the convention of diffusers' inpainting).

    OpenAI semantics: with alpha, fully transparent pixels mark the edit area; the mask
    is 255 - alpha, so partly transparent edges give a soft mask. An image without alpha,
    or whose alpha is fully opaque (a black-and-white mask saved as RGBA), is read by
    luminance: white = edit.
    """
    if image.mode == "RGBA":
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:
            return (255 - alpha).astype(np.uint8)
        image = image.convert("RGB")
    return np.array(image.convert("L"), dtype=np.uint8)
