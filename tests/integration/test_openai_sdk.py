"""The official openai SDK, unchanged, against the running Serve application."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from tests.helpers import decode

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "model",
    ["z-image-tiny", "sd-tiny", "glm-image-tiny", "qwen-image-tiny", "flux-tiny", "generic-tiny"],
)
def test_generate_b64_gives_n_images_of_the_asked_size(openai_client, model):
    result = openai_client.images.generate(
        model=model,
        prompt="a ceramic mug on a desk",
        n=2,
        size="128x64",
        response_format="b64_json",
        extra_body={"steps": 2},
    )
    assert len(result.data) == 2
    for item in result.data:
        image = decode(item.b64_json)
        assert image.format == "PNG"
        assert image.size == (128, 64)
        assert item.revised_prompt == "a ceramic mug on a desk"
    seeds = [item.model_extra["seed"] for item in result.data]
    assert seeds[1] == (seeds[0] + 1) % 2**32
    assert result.size == "128x64"


def test_generate_url_serves_signed_files(openai_client):
    result = openai_client.images.generate(
        model="sd-tiny",
        prompt="a lighthouse",
        n=2,
        size="64x64",
        response_format="url",
        extra_body={"seed": 11, "steps": 2},
    )
    assert len(result.data) == 2
    for item in result.data:
        response = httpx.get(item.url, timeout=30)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert decode(base64.b64encode(response.content).decode()).size == (64, 64)
    tampered = result.data[0].url.replace("sig=", "sig=0")
    assert httpx.get(tampered, timeout=30).status_code == 403


def test_fixed_seed_gives_identical_bytes(openai_client):
    def once():
        return (
            openai_client.images.generate(
                model="z-image-tiny",
                prompt="same seed, same picture",
                size="64x64",
                extra_body={"seed": 1234, "steps": 2},
            )
            .data[0]
            .b64_json
        )

    assert once() == once()


def test_other_seed_gives_other_image(openai_client):
    def with_seed(seed):
        return (
            openai_client.images.generate(
                model="z-image-tiny",
                prompt="seeded",
                size="64x64",
                extra_body={"seed": seed, "steps": 2},
            )
            .data[0]
            .b64_json
        )

    assert with_seed(1) != with_seed(2)


@pytest.mark.parametrize("output_format, pil_format", [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_formats(openai_client, output_format, pil_format):
    result = openai_client.images.generate(
        model="sd-tiny",
        prompt="format check",
        size="96x64",
        output_format=output_format,
        output_compression=80,
        extra_body={"steps": 2},
    )
    image = decode(result.data[0].b64_json)
    assert (image.format, image.size) == (pil_format, (96, 64))
    assert result.output_format == output_format


def test_sdk_errors_are_typed_with_useful_messages(openai_client):
    with pytest.raises(openai.NotFoundError) as unknown_model:
        openai_client.images.generate(model="no-such-model", prompt="x")
    assert "no-such-model" in unknown_model.value.message
    assert unknown_model.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as too_many:
        openai_client.images.generate(model="sd-tiny", prompt="x", n=8)
    assert too_many.value.param == "n"
    assert "at most 4" in too_many.value.message

    with pytest.raises(openai.BadRequestError) as bad_size:
        openai_client.images.generate(model="sd-tiny", prompt="x", size="1792x1024")
    assert bad_size.value.code == "invalid_size"


def test_template_style_and_brand(openai_client):
    result = openai_client.images.generate(
        model="sd-tiny",
        prompt="",
        size="64x64",
        extra_body={
            "template": "product-main-shot",
            "variables": {"product_name": "a walnut desk lamp"},
            "brand": "acme-retail",
            "steps": 2,
        },
    )
    revised = result.data[0].revised_prompt
    assert "a walnut desk lamp" in revised
    assert "photorealistic" in revised  # the template's default style
    assert "#0A2540" in revised  # the brand palette
