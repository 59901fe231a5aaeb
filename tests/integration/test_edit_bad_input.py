"""Hostile images and hostile image URLs against /v1/images/edits: each gets a 4xx in the
envelope, nothing reaches a loopback listener that is not allowlisted, and the service
stays healthy."""

from __future__ import annotations

import base64

import pytest

from serve_app.images import ImageLimits
from tests.bad_images import bad_base64, bad_images
from tests.helpers import assert_error, png_bytes

pytestmark = pytest.mark.integration

# The limits tests/integration/conftest.py gives the application.
LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=4_000_000, max_side=4096)
PROMPT = "replace the label with 'Members 79'"


def multipart_edit(client, image: bytes, model: str = "pix2pix-tiny", **fields):
    return client.post(
        "/v1/images/edits",
        files={"image": ("upload.bin", image, "application/octet-stream")},
        data={"model": model, "prompt": PROMPT, "steps": "2", **fields},
    )


def json_edit(client, reference: dict, model: str = "pix2pix-tiny"):
    return client.post(
        "/v1/images/edits",
        json={"model": model, "prompt": PROMPT, "steps": 2, "images": [reference]},
    )


def assert_still_healthy(client):
    assert client.get("/v1/health").status_code == 200
    response = multipart_edit(client, png_bytes(64, 64))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("bad", bad_images(LIMITS), ids=lambda bad: bad.name)
def test_bad_upload_gets_its_4xx(client, bad):
    data = bad.data.encode() if isinstance(bad.data, str) else bad.data
    assert_error(multipart_edit(client, data), bad.status, bad.code, "image[0]")


@pytest.mark.parametrize("bad", bad_base64(LIMITS), ids=lambda bad: bad.name)
def test_bad_base64_gets_its_4xx(client, bad):
    text = bad.data if isinstance(bad.data, str) else base64.b64encode(bad.data).decode()
    key = "image_url" if text.startswith("data:") else "b64_json"
    assert_error(json_edit(client, {key: text}), bad.status, bad.code, "images[0]")


def test_service_is_healthy_after_the_bad_corpus(client):
    for bad in bad_images(LIMITS):
        data = bad.data.encode() if isinstance(bad.data, str) else bad.data
        assert 400 <= multipart_edit(client, data).status_code < 500
    assert_still_healthy(client)


def test_mask_of_another_size_is_refused(client):
    response = client.post(
        "/v1/images/edits",
        files={
            "image": ("a.png", png_bytes(64, 64), "image/png"),
            "mask": ("m.png", png_bytes(32, 32), "image/png"),
        },
        data={"model": "pix2pix-tiny", "prompt": PROMPT},
    )
    assert_error(response, 400, "mask_size_mismatch", "mask")


def test_form_and_content_type_mistakes(client):
    no_image = client.post("/v1/images/edits", data={"model": "pix2pix-tiny", "prompt": "x"})
    assert_error(no_image, 400, "missing_image", "image")
    assert_error(
        client.post("/v1/images/edits", content=b"hello", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    unknown = multipart_edit(client, png_bytes(64, 64), negativ_prompt="typo")
    assert_error(unknown, 400, "invalid_parameter", "negativ_prompt")
    bad_n = multipart_edit(client, png_bytes(64, 64), n="many")
    assert_error(bad_n, 400, "invalid_parameter", "n")
    stray_file = client.post(
        "/v1/images/edits",
        files={"picture": ("a.png", png_bytes(64, 64), "image/png")},
        data={"model": "pix2pix-tiny", "prompt": "x"},
    )
    assert_error(stray_file, 400, "invalid_file_field", "picture")


def test_an_upload_over_the_body_limit_is_413(client):
    response = multipart_edit(client, b"\x89PNG" + bytes(5 << 20))
    assert_error(response, 413, "body_too_large")


SSRF_URLS = [
    "http://127.0.0.1:{secret}/",
    "http://localhost:{secret}/",
    "http://127.1:{secret}/",
    "http://2130706433:{secret}/",
    "http://0x7f000001:{secret}/",
    "http://0177.0.0.1:{secret}/",
    "http://0.0.0.0:{secret}/",
    "http://[::1]:{secret}/",
    "http://[::ffff:127.0.0.1]:{secret}/",
    "http://[::ffff:7f00:1]:{secret}/",
    "http://[64:ff9b::7f00:1]:{secret}/",
    "http://[2002:7f00:1::]:{secret}/",
    "https://10.0.0.1/a.png",
    "https://172.16.0.1/a.png",
    "https://192.168.1.1/a.png",
    "https://100.64.0.1/a.png",
    "https://169.254.169.254/latest/meta-data/",
    "https://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "https://[fd00::1]/a.png",
    "https://[fe80::1]/a.png",
    "file:///etc/passwd",
    "ftp://127.0.0.1:{secret}/",
    "gopher://127.0.0.1:{secret}/",
    "https://user@127.0.0.1:{secret}/",
]


@pytest.mark.parametrize("template", SSRF_URLS)
def test_ssrf_address_forms_are_refused_without_a_connection(client, secret_host, template):
    before = secret_host.connections
    response = json_edit(client, {"image_url": template.format(secret=secret_host.port)})
    assert_error(response, 400, param="images[0]")
    assert response.json()["error"]["code"] in {"image_url_forbidden", "image_url_invalid"}
    assert secret_host.connections == before


@pytest.mark.parametrize("path", ["/to-secret", "/to-localhost"])
def test_redirect_from_an_allowlisted_host_to_loopback_is_refused(
    client, image_host, secret_host, path
):
    before = secret_host.connections
    response = json_edit(client, {"image_url": image_host.url(path)})
    assert_error(response, 400, "image_url_forbidden", "images[0]")
    assert secret_host.connections == before
