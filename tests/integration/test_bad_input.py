"""Every kind of bad input gets a 4xx in the error envelope, and the service stays healthy."""

from __future__ import annotations

import pytest

from tests.helpers import assert_error

pytestmark = pytest.mark.integration

GOOD = {"model": "sd-tiny", "prompt": "a kettle", "size": "64x64", "steps": 2}

BAD_BODIES = [
    ({**GOOD, "model": "nope"}, 404, "model_not_found", "model"),
    ({**GOOD, "n": 5}, 400, "invalid_n", "n"),
    ({**GOOD, "n": 0}, 400, "invalid_parameter", "n"),
    ({**GOOD, "n": 11}, 400, "invalid_parameter", "n"),
    ({**GOOD, "size": "1024x1024"}, 400, "invalid_size", "size"),
    ({**GOOD, "size": "65x64"}, 400, "invalid_size", "size"),
    ({**GOOD, "size": "32x32"}, 400, "invalid_size", "size"),
    ({**GOOD, "size": "big"}, 400, "invalid_size", "size"),
    ({**GOOD, "model": "z-image-tiny", "size": "72x64"}, 400, "invalid_size", "size"),
    ({**GOOD, "steps": 21}, 400, "invalid_steps", "steps"),
    ({**GOOD, "steps": 0}, 400, "invalid_parameter", "steps"),
    ({**GOOD, "guidance_scale": 99}, 400, "invalid_guidance_scale", "guidance_scale"),
    ({**GOOD, "seed": -1}, 400, "invalid_parameter", "seed"),
    ({**GOOD, "response_format": "gif"}, 400, "invalid_parameter", "response_format"),
    ({**GOOD, "output_format": "bmp"}, 400, "invalid_parameter", "output_format"),
    ({**GOOD, "stream": "yes"}, 400, "invalid_parameter", "stream"),
    ({**GOOD, "stream": True, "partial_images": 4}, 400, "invalid_parameter", "partial_images"),
    (
        {**GOOD, "stream": True, "response_format": "url"},
        400,
        "unsupported_parameter",
        "response_format",
    ),
    ({**GOOD, "template": "nope"}, 400, "template_not_found", "template"),
    ({**GOOD, "style": "nope"}, 400, "style_not_found", "style"),
    ({**GOOD, "brand": "nope"}, 400, "brand_not_found", "brand"),
    ({**GOOD, "template": "product-main-shot"}, 400, "missing_variable", "variables.product_name"),
    (
        {
            **GOOD,
            "template": "product-main-shot",
            "variables": {"product_name": "x", "colour": "y"},
        },
        400,
        "unknown_variable",
        "variables",
    ),
    ({**GOOD, "variables": {"a": "b"}}, 400, "unexpected_variables", "variables"),
    (
        {**GOOD, "brand": "acme-retail", "prompt": "the CHEAPEST kettle"},
        400,
        "banned_term",
        "prompt",
    ),
    ({**GOOD, "prompt": "   "}, 400, "empty_prompt", "prompt"),
    ({**GOOD, "prompt": "x" * 4001}, 400, "prompt_too_long", "prompt"),
    ({"model": "sd-tiny", "size": "64x64"}, 400, "invalid_parameter", "prompt"),
    (
        {**GOOD, "model": "glm-image-tiny", "negative_prompt": "blurry"},
        400,
        "unsupported_parameter",
        "negative_prompt",
    ),
    (
        {**GOOD, "model": "flux-tiny", "negative_prompt": "blurry"},
        400,
        "unsupported_parameter",
        "negative_prompt",
    ),
]


@pytest.mark.parametrize(
    "body, status, code, param", BAD_BODIES, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD_BODIES)]
)
def test_bad_generation_requests(client, body, status, code, param):
    assert_error(client.post("/v1/images/generations", json=body), status, code, param)


def test_malformed_json(client):
    response = client.post(
        "/v1/images/generations",
        content=b'{"prompt": "x",',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "invalid_json")


def test_body_that_is_not_an_object(client):
    assert_error(client.post("/v1/images/generations", json=["a", "list"]), 400)


def test_body_over_the_limit_is_413(client):
    assert_error(
        client.post("/v1/images/generations", json={**GOOD, "prompt": "x" * 70000}),
        413,
        "body_too_large",
    )


def test_chunked_body_over_the_limit_is_refused(client):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    response = client.post(
        "/v1/images/generations", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "body_too_large")


def test_unknown_route_and_method(client):
    assert_error(client.get("/v1/nothing-here"), 404)
    assert_error(client.get("/v1/images/generations"), 405)


def test_expired_or_unsigned_file_links(client):
    key = "0" * 64 + ".png"
    assert_error(client.get(f"/files/{key}?expires=1&sig=abc"), 403, "invalid_signature")
    assert_error(client.get(f"/files/{key}"), 400)


def test_service_healthy_after_bad_input(client):
    for body, *_ in BAD_BODIES[:5]:
        client.post("/v1/images/generations", json=body)
    client.post(
        "/v1/images/generations",
        content=b"\xff\xfe garbage",
        headers={"content-type": "application/json"},
    )
    health = client.get("/v1/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    response = client.post("/v1/images/generations", json=GOOD)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1
