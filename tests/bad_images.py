"""A corpus of hostile and awkward image files, built in code (Pillow and byte surgery).

`bad_images()` and `bad_base64()` must each get a 4xx with the listed status and code;
`accepted_images()` are odd but valid files that must be decoded (and re-encoded from
pixels only). Unit tests feed them to `serve_app.images`; integration tests send them
over HTTP.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import NamedTuple

from PIL import Image

from serve_app.images import ImageLimits

HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"


class BadImage(NamedTuple):
    name: str
    data: bytes | str
    status: int
    code: str


class AcceptedImage(NamedTuple):
    name: str
    data: bytes
    size: tuple[int, int]  # (width, height) after decoding
    why: str


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sample(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A gradient, so truncation loses real data and lossy codecs have something to do."""
    gradient = Image.linear_gradient("L").resize(size)
    return Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90).resize(size), gradient)
    )


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims width x height (8-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    """A real PNG with one extra chunk inserted right after IHDR."""
    data = encode(sample(), "PNG")
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + png_chunk(kind, payload) + data[ihdr_end:]


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real baseline JPEG whose SOF0 header is patched to claim width x height."""
    data = bytearray(encode(sample(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def big_exif(size: int) -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * size  # ImageDescription
    return exif.tobytes()


def frames(fmt: str) -> bytes:
    first, second = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)


def bad_images(limits: ImageLimits | None = None) -> list[BadImage]:
    limits = limits or ImageLimits()
    png, jpeg, webp = (encode(sample(), fmt) for fmt in ("PNG", "JPEG", "WEBP"))
    corrupt_crc = bytearray(png)
    corrupt_crc[29] ^= 0xFF  # the IHDR CRC
    garbage_idat = png_with_chunk(b"IDAT", b"not zlib at all")
    return [
        BadImage("empty", b"", 400, "invalid_image"),
        BadImage(
            "over_byte_cap",
            png + b"\x00" * (limits.max_bytes + 1 - len(png)),
            413,
            "image_too_large",
        ),
        BadImage("truncated_png", png[: len(png) // 2], 400, "image_truncated"),
        BadImage("truncated_jpeg", jpeg[: len(jpeg) // 2], 400, "image_truncated"),
        BadImage("truncated_webp", webp[: len(webp) // 2], 400, "image_truncated"),
        BadImage("png_bad_crc", bytes(corrupt_crc), 400, "invalid_image"),
        BadImage("png_garbage_idat", garbage_idat, 400, "invalid_image"),
        BadImage("html", HTML, 415, "unsupported_image_format"),
        BadImage("text", b"just some text\n", 415, "unsupported_image_format"),
        BadImage(
            "svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            415,
            "unsupported_image_format",
        ),
        BadImage("gif", encode(sample(), "GIF"), 415, "unsupported_image_format"),
        BadImage("animated_gif", frames("GIF"), 415, "unsupported_image_format"),
        BadImage("bmp", encode(sample(), "BMP"), 415, "unsupported_image_format"),
        BadImage("tiff", encode(sample(), "TIFF"), 415, "unsupported_image_format"),
        BadImage("html_then_png", HTML + png, 415, "unsupported_image_format"),
        BadImage(
            "png_declaring_10000x10000", png_declaring(10_000, 10_000), 413, "image_too_large"
        ),
        BadImage("png_declaring_100000x1", png_declaring(100_000, 1), 413, "image_too_large"),
        BadImage(
            "jpeg_declaring_60000x60000", jpeg_declaring(60_000, 60_000), 413, "image_too_large"
        ),
        BadImage("animated_png", frames("PNG"), 400, "animated_image_unsupported"),
        BadImage("animated_webp", frames("WEBP"), 400, "animated_image_unsupported"),
        BadImage(
            "png_huge_exif",
            encode(sample(), "PNG", exif=big_exif(256 << 10)),
            400,
            "image_metadata_too_large",
        ),
        BadImage(
            "webp_huge_exif",
            encode(sample(), "WEBP", exif=big_exif(256 << 10)),
            400,
            "image_metadata_too_large",
        ),
        BadImage(
            "png_ztxt_bomb",
            png_with_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (8 << 20))),
            400,
            "image_metadata_too_large",
        ),
    ]


def bad_base64(limits: ImageLimits | None = None) -> list[BadImage]:
    """Payloads for `decode_base64_image` (JSON bodies): bare base64 or data URLs."""
    limits = limits or ImageLimits()
    png = base64.b64encode(encode(sample(), "PNG")).decode()
    gif = base64.b64encode(encode(sample(), "GIF")).decode()
    html = base64.b64encode(HTML).decode()
    oversize = "A" * (4 * (limits.max_bytes // 3 + 2))
    return [
        BadImage("garbage_chars", "this is not base64!", 400, "invalid_base64"),
        BadImage("wrong_padding", png[:-3] + "=", 400, "invalid_base64"),
        BadImage("missing_padding", "iVBORw0KGgo", 400, "invalid_base64"),
        BadImage("urlsafe_alphabet", png[:40] + "-_" + png[42:], 400, "invalid_base64"),
        BadImage("non_ascii", png[:40] + "é" + png[41:], 400, "invalid_base64"),
        BadImage("data_url_not_base64", "data:image/png," + png, 400, "invalid_base64"),
        BadImage("data_url_html", "data:text/html;base64," + html, 415, "unsupported_image_format"),
        BadImage("data_url_gif", "data:image/gif;base64," + gif, 415, "unsupported_image_format"),
        BadImage(
            "data_url_svg", "data:image/svg+xml;base64," + html, 415, "unsupported_image_format"
        ),
        BadImage(
            "data_url_png_holding_html",
            "data:image/png;base64," + html,
            415,
            "unsupported_image_format",
        ),
        BadImage("bare_html", html, 415, "unsupported_image_format"),
        BadImage("empty_data_url", "data:image/png;base64,", 400, "invalid_image"),
        BadImage("over_byte_cap", "data:image/png;base64," + oversize, 413, "image_too_large"),
    ]


def accepted_images() -> list[AcceptedImage]:
    """Valid files that look suspicious or need deliberate conversion."""
    png, jpeg = encode(sample(), "PNG"), encode(sample(), "JPEG")
    zip_tail = zip_bytes()
    return [
        AcceptedImage(
            "cmyk_jpeg",
            encode(Image.new("CMYK", (40, 30), (255, 0, 0, 0)), "JPEG"),
            (40, 30),
            "converted to RGB (naive CMYK formula, ICC ignored)",
        ),
        AcceptedImage(
            "jpeg_exif_60k",
            encode(sample(), "JPEG", exif=big_exif(60_000)),
            (64, 48),
            "a JPEG's EXIF is at most 64 KiB: stripped, not refused",
        ),
        AcceptedImage(
            "png_then_html", png + HTML, (64, 48), "polyglot: only pixels are re-encoded"
        ),
        AcceptedImage(
            "png_then_zip", png + zip_tail, (64, 48), "polyglot: only pixels are re-encoded"
        ),
        AcceptedImage(
            "jpeg_then_html", jpeg + HTML, (64, 48), "polyglot: cameras append data after EOI"
        ),
        AcceptedImage(
            "jpeg_html_comment",
            encode(sample(), "JPEG", comment=HTML),
            (64, 48),
            "the comment segment is dropped",
        ),
        AcceptedImage(
            "mpo_two_pictures",
            encode(sample(), "MPO", save_all=True, append_images=[sample((32, 24))]),
            (64, 48),
            "a camera's multi-picture JPEG is not an animation: the first picture is used",
        ),
        AcceptedImage(
            "png_html_text_chunk",
            png_with_chunk(b"tEXt", b"Comment\x00" + HTML),
            (64, 48),
            "text chunks are dropped",
        ),
    ]


def zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", HTML)
    return buffer.getvalue()
