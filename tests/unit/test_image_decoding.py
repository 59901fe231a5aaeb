"""Decoding and encoding image files (serve_app/images.py): every bad file gets its 4xx,
odd good files are converted right, and pixels are cropped and turned into arrays."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from serve_app.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from serve_app.images import (
    ImageLimits,
    decode_base64_image,
    decode_image,
    encode_image,
    fit_to_size,
    mask_to_array,
    to_rgb_array,
)
from tests.bad_images import (
    HTML,
    accepted_images,
    bad_base64,
    bad_images,
    big_exif,
    encode,
    png_declaring,
    sample,
)

LIMITS = ImageLimits(max_bytes=1 << 20)
ERROR_CLASSES = {
    400: InvalidRequestError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
}


def decode(data: bytes, **options) -> Image.Image:
    return decode_image(data, LIMITS, param="image", **options)


def refusal(call, *args, **kwargs):
    with pytest.raises(
        (InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError)
    ) as info:
        call(*args, **kwargs)
    return info.value


# --- the bad corpus -------------------------------------------------------------------------


@pytest.mark.parametrize("case", bad_images(LIMITS), ids=lambda case: case.name)
def test_each_bad_image_gets_its_status_and_code(case):
    error = refusal(decode_image, case.data, LIMITS, param="image[1]")
    assert (error.status_code, error.code) == (case.status, case.code)
    assert type(error) is ERROR_CLASSES[case.status]
    assert error.param == "image[1]"
    assert error.message.startswith("image[1]: ")
    assert "script" not in error.message and "<" not in error.message


@pytest.mark.parametrize("case", bad_base64(LIMITS), ids=lambda case: case.name)
def test_each_bad_base64_payload_gets_its_status_and_code(case):
    error = refusal(decode_base64_image, case.data, LIMITS, param="mask")
    assert (error.status_code, error.code, error.param) == (case.status, case.code, "mask")
    assert "script" not in error.message


def test_the_default_limits_refuse_the_corpus_too():
    names = {case.name: case for case in bad_images()}
    over_cap = names["over_byte_cap"]
    assert len(over_cap.data) == ImageLimits().max_bytes + 1
    for case in names.values():
        error = refusal(decode_image, case.data, ImageLimits(), param="image")
        assert (error.status_code, error.code) == (case.status, case.code), case.name


def test_pixel_cap_is_checked_from_the_header_before_decoding():
    # 48 MP is under Pillow's own bomb threshold (89 MP) but over ours (40 MP); the file's
    # IDAT is tiny, so decoding it would have answered "truncated", not 413.
    error = refusal(decode_image, png_declaring(8000, 6000), ImageLimits(), param="image")
    assert (error.status_code, error.code) == (413, "image_too_large")
    assert "8000x6000" in error.message
    small = ImageLimits(max_pixels=100, max_side=50)
    error = refusal(decode_image, encode(sample((11, 10)), "PNG"), small, param="image")
    assert error.status_code == 413
    error = refusal(decode_image, encode(sample((51, 1)), "PNG"), small, param="image")
    assert error.status_code == 413
    assert decode_image(encode(sample((10, 10)), "PNG"), small, param="image").size == (10, 10)


def test_byte_cap_is_exact():
    data = encode(sample(), "PNG")
    assert decode_image(data, ImageLimits(max_bytes=len(data)), param="image").size == (64, 48)
    error = refusal(decode_image, data, ImageLimits(max_bytes=len(data) - 1), param="image")
    assert error.status_code == 413


def test_exif_cap_is_a_limit():
    data = encode(sample(), "PNG", exif=big_exif(5000))
    assert decode(data).size == (64, 48)
    error = refusal(decode_image, data, ImageLimits(max_exif_bytes=4000), param="image")
    assert error.code == "image_metadata_too_large"


def test_decoding_leaves_pillow_and_warning_settings_alone():
    filters = list(warnings.filters)
    for case in bad_images(LIMITS):
        with pytest.raises(Exception):  # noqa: B017 - every case raises; settings are the point
            decode(case.data)
    assert warnings.filters == filters
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- accepted: odd but valid, re-encoded from pixels only -----------------------------------


@pytest.mark.parametrize("case", accepted_images(), ids=lambda case: case.name)
def test_odd_valid_files_decode_to_clean_pixels(case):
    image = decode(case.data)
    assert (image.size, image.mode, image.info) == (case.size, "RGB", {})
    assert len(image.getexif()) == 0
    for fmt in ("png", "jpeg", "webp"):
        out = encode_image(to_rgb_array(image), fmt)
        for marker in (b"<script", b"<html", b"PK\x03\x04", b"Exif", b"ICC_PROFILE", b"xxxxx"):
            assert marker not in out, (fmt, marker)


def test_polyglot_payloads_are_really_in_the_input():
    # Guards the test above: the markers it looks for are present before re-encoding.
    by_name = {case.name: case.data for case in accepted_images()}
    assert b"<script" in by_name["png_then_html"] and b"PK\x03\x04" in by_name["png_then_zip"]
    assert b"<script" in by_name["jpeg_html_comment"] and b"Exif" in by_name["jpeg_exif_60k"]


def test_cmyk_is_converted_with_the_naive_formula():
    quadrants = Image.new("CMYK", (64, 64))
    for (x, y), ink in {
        (0, 0): (0, 0, 0, 0),
        (32, 0): (255, 0, 0, 0),
        (0, 32): (0, 255, 0, 0),
        (32, 32): (0, 0, 0, 255),
    }.items():
        quadrants.paste(ink, (x, y, x + 32, y + 32))
    pixels = to_rgb_array(decode(encode(quadrants, "JPEG", quality=95)))
    expected = {(16, 16): (255, 255, 255), (48, 16): (0, 255, 255), (16, 48): (255, 0, 255)}
    expected[(48, 48)] = (0, 0, 0)
    for (x, y), rgb in expected.items():
        assert np.abs(pixels[y, x].astype(int) - rgb).max() <= 6, (x, y, pixels[y, x])


# --- the good corpus ------------------------------------------------------------------------


def test_rgba_is_composited_over_white_unless_alpha_is_kept():
    rgba = Image.new("RGBA", (4, 2), (0, 255, 0, 0))  # green hidden under full transparency
    rgba.putpixel((1, 0), (255, 0, 0, 255))
    rgba.putpixel((2, 0), (0, 0, 0, 128))
    data = encode(rgba, "PNG")
    flat = np.asarray(decode(data))
    assert tuple(flat[0, 0]) == (255, 255, 255)
    assert tuple(flat[0, 1]) == (255, 0, 0)
    assert all(abs(int(v) - 127) <= 1 for v in flat[0, 2])
    kept = decode(data, keep_alpha=True)
    assert kept.mode == "RGBA" and kept.info == {}
    assert kept.getpixel((1, 0)) == (255, 0, 0, 255)
    assert kept.getpixel((2, 0))[3] == 128


def test_palette_with_transparency_becomes_rgba():
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((0, 0), 0)
    data = encode(palette, "PNG", transparency=0)
    kept = decode(data, keep_alpha=True)
    assert kept.mode == "RGBA"
    assert kept.getpixel((0, 0))[3] == 0 and kept.getpixel((1, 1)) == (0, 0, 255, 255)
    flat = decode(data)
    assert flat.mode == "RGB"
    assert flat.getpixel((0, 0)) == (255, 255, 255) and flat.getpixel((1, 1)) == (0, 0, 255)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 1000, 30000, 32896, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    image = decode(data)
    assert image.mode == "RGB"
    assert list(np.asarray(image)[0, :, 0]) == [0, 4, 117, 128, 255]


@pytest.mark.parametrize("mode", ["1", "L", "LA"])
def test_gray_modes_become_rgb(mode):
    fill = {"1": 1, "L": 200, "LA": (200, 255)}[mode]
    image = decode(encode(Image.new(mode, (3, 3), fill), "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == ((255,) * 3 if mode == "1" else (200,) * 3)


def test_gray_with_a_transparent_value_gets_alpha():
    gray = Image.new("L", (2, 1), 7)
    gray.putpixel((1, 0), 9)
    kept = decode(encode(gray, "PNG", transparency=7), keep_alpha=True)
    assert kept.getpixel((0, 0))[3] == 0 and kept.getpixel((1, 0)) == (9, 9, 9, 255)


def test_exif_orientation_is_applied_and_dropped():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 8, 8))  # a red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    upright = decode(encode(image, "JPEG", quality=95, exif=exif.tobytes()))
    assert upright.size == (20, 40)
    assert upright.getpixel((16, 3))[0] > 200  # the red corner moved to the top right
    assert upright.getpixel((3, 3))[2] > 200
    assert len(upright.getexif()) == 0


def test_malformed_exif_is_ignored_not_fatal():
    data = encode(sample(), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\xff garbage")
    assert decode(data).size == (64, 48)


def test_lossless_webp_keeps_exact_pixels():
    pixels = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    image = decode(encode(Image.fromarray(pixels), "WEBP", lossless=True))
    assert np.array_equal(to_rgb_array(image), pixels)


def test_gps_exif_and_icc_profile_are_stripped():
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)  # GPSLatitude
    icc = b"\x00\x00\x02\x0cfake-icc-profile" + b"\x00" * 500
    data = encode(sample(), "JPEG", exif=exif.tobytes(), icc_profile=icc)
    source = Image.open(io.BytesIO(data))
    assert "exif" in source.info and "icc_profile" in source.info
    image = decode(data)
    assert image.info == {} and len(image.getexif()) == 0
    for fmt in ("png", "jpeg", "webp"):
        out = encode_image(to_rgb_array(image), fmt)
        assert b"Exif" not in out and b"SecretCam" not in out and b"fake-icc" not in out


# --- base64 and data URLs -------------------------------------------------------------------


def test_base64_forms_that_are_accepted():
    jpeg = encode(sample(), "JPEG")
    bare = base64.b64encode(jpeg).decode()
    wrapped = "\r\n".join(bare[i : i + 76] for i in range(0, len(bare), 76))
    for text in (
        bare,
        wrapped,
        "data:image/jpeg;base64," + bare,
        "DATA:IMAGE/JPG;BASE64," + bare,
        "data:image/png;base64," + bare,  # mislabelled: the sniffed format wins
        "data:image/webp;name=x.webp;base64," + bare,
    ):
        image = decode_base64_image(text, LIMITS, param="image")
        assert image.size == (64, 48) and image.mode == "RGB"


def test_base64_length_is_checked_before_decoding():
    limits = ImageLimits(max_bytes=300)
    error = refusal(decode_base64_image, "!" * 401, limits, param="image")
    assert error.status_code == 413  # not invalid_base64: the length check came first
    error = refusal(decode_base64_image, "!" * 400, limits, param="image")
    assert error.code == "invalid_base64"


# --- fitting and arrays ---------------------------------------------------------------------


def test_fit_to_size_crops_the_center():
    image = Image.new("RGB", (400, 200), (255, 0, 0))
    image.paste((0, 255, 0), (100, 0, 300, 200))
    image.paste((0, 0, 255), (300, 0, 400, 200))
    fitted = to_rgb_array(fit_to_size(image, 64, 64))
    assert fitted.shape == (64, 64, 3)
    # LANCZOS looks one pixel past the crop at the edges; the inside is the green middle.
    assert np.abs(fitted[:, 2:-2].astype(int) - (0, 255, 0)).max() <= 2
    assert fitted[..., 0].mean() < 2 and fitted[..., 2].mean() < 2


def test_to_rgb_array_shape_and_flattening():
    rgba = Image.new("RGBA", (5, 3), (10, 20, 30, 0))
    array = to_rgb_array(rgba)
    assert array.shape == (3, 5, 3) and array.dtype == np.uint8
    assert (array == 255).all()
    assert array.flags.writeable


def test_mask_from_alpha_marks_transparent_pixels_for_editing():
    mask = Image.new("RGBA", (4, 1), (0, 0, 0, 255))
    mask.putpixel((0, 0), (0, 0, 0, 0))
    mask.putpixel((1, 0), (255, 255, 255, 128))
    decoded = decode(encode(mask, "PNG"), keep_alpha=True)
    assert list(mask_to_array(decoded)[0]) == [255, 127, 0, 0]


def test_mask_without_alpha_uses_luminance():
    mask = Image.new("L", (3, 1), 0)
    mask.putpixel((0, 0), 255)
    opaque_rgba = Image.merge("RGBA", (*mask.convert("RGB").split(), Image.new("L", (3, 1), 255)))
    for source in (mask, opaque_rgba):
        decoded = decode(encode(source, "PNG"), keep_alpha=True)
        array = mask_to_array(decoded)
        assert array.shape == (1, 3) and array.dtype == np.uint8
        assert list(array[0]) == [255, 0, 0]


def test_decoded_html_is_never_in_an_error_or_output():
    png_html = encode(sample(), "PNG") + HTML
    out = encode_image(to_rgb_array(decode(png_html)), "png")
    assert HTML not in out
