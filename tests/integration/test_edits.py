"""POST /v1/images/edits on the running Serve application: the openai SDK unchanged
(multipart), the JSON form with data URLs, base64 and allowlisted URLs, batching, masks."""

from __future__ import annotations

import base64
import concurrent.futures
import io

import numpy as np
import openai
import pytest
from PIL import Image

from tests.helpers import assert_error, decode, pixels, png_bytes

pytestmark = pytest.mark.integration


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def edit_json(client, **body):
    return client.post("/v1/images/edits", json={"prompt": "make the label dark blue", **body})


@pytest.mark.parametrize(
    "model",
    [
        "pix2pix-tiny",
        "qwen-edit-tiny",
        "qwen-edit-plus-tiny",
        "longcat-edit-tiny",
        "flux-kontext-tiny",
    ],
)
def test_sdk_edit_with_one_image_keeps_the_aspect_at_the_working_area(openai_client, model):
    result = openai_client.images.edit(
        model=model,
        image=("photo.png", png_bytes(320, 240), "image/png"),
        prompt="replace the label 'Sale 99' with 'Members 79', bold, dark blue",
        n=2,
        extra_body={"steps": 2, "seed": 5},
    )
    assert len(result.data) == 2
    sizes = {decode(item.b64_json).size for item in result.data}
    # 4:3 at the default 256x256 area (295.6x221.7), rounded to the family's multiple.
    expected = (296, 224) if model == "pix2pix-tiny" else (288, 224)
    assert sizes == {expected}
    assert result.size == "x".join(map(str, sizes.pop()))
    seeds = [item.model_extra["seed"] for item in result.data]
    assert seeds == [5, 6]
    assert not np.array_equal(pixels(result.data[0].b64_json), pixels(result.data[1].b64_json))


def test_sdk_edit_with_several_images(openai_client):
    result = openai_client.images.edit(
        model="qwen-edit-plus-tiny",
        image=[
            ("product.png", png_bytes(256, 256, seed=1), "image/png"),
            ("logo.png", png_bytes(128, 128, seed=2), "image/png"),
            ("scene.png", png_bytes(256, 128, seed=4), "image/png"),
        ],
        prompt="put the logo from image 2 on the mug in image 1, in the scene of image 3",
        size="256x256",
        extra_body={"steps": 2},
    )
    assert len(result.data) == 1
    assert decode(result.data[0].b64_json).size == (256, 256)


def test_several_images_to_a_single_image_model_is_refused(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(
            model="qwen-edit-tiny",
            image=[("a.png", png_bytes(64, 64), "image/png")] * 2,
            prompt="x",
        )
    assert info.value.body["code"] == "too_many_images"


def test_sdk_edit_with_mask_changes_only_the_masked_area(openai_client):
    original = png_bytes(256, 256, seed=9)
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 128, 256))  # transparent = may change
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    result = openai_client.images.edit(
        model="pix2pix-tiny",
        image=("photo.png", original, "image/png"),
        mask=("mask.png", buffer.getvalue(), "image/png"),
        prompt="make the left half blue",
        extra_body={"steps": 2, "seed": 1},
    )
    out = pixels(result.data[0].b64_json)
    source = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"), dtype=np.int16)
    assert out.shape == source.shape
    assert np.array_equal(out[:, 128:], source[:, 128:])
    assert not np.array_equal(out[:, :128], source[:, :128])


def test_json_edit_with_a_data_url_and_with_bare_base64_agree(client):
    photo = png_bytes(256, 256, seed=2)
    common = {"model": "qwen-edit-tiny", "seed": 3, "steps": 2}
    by_url = edit_json(client, images=[{"image_url": data_url(photo)}], **common)
    by_b64 = edit_json(client, images=[{"b64_json": base64.b64encode(photo).decode()}], **common)
    assert by_url.status_code == 200, by_url.text
    assert by_b64.status_code == 200, by_b64.text
    assert by_url.json()["data"][0]["b64_json"] == by_b64.json()["data"][0]["b64_json"]


def test_json_edit_fetches_an_allowlisted_url_through_a_redirect(client, image_host):
    response = edit_json(
        client,
        model="pix2pix-tiny",
        images=[{"image_url": image_host.url("/hop")}],
        steps=2,
        output_format="webp",
        response_format="url",
    )
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    fetched = client.get(item["url"].split(str(client.base_url).rstrip("/"), 1)[-1])
    assert fetched.status_code == 200
    image = Image.open(io.BytesIO(fetched.content))
    assert image.format == "WEBP"
    assert image.size == (296, 224)  # 4:3 photo at the 256x256 area, multiples of 8


def test_concurrent_edits_share_a_batch_and_match_solo_runs(client):
    photos = [png_bytes(256, 256, seed=s) for s in (11, 12, 13)]

    def run(index: int):
        return edit_json(
            client,
            model="qwen-edit-tiny",
            images=[{"image_url": data_url(photos[index])}],
            seed=100 + index,
            steps=2,
        )

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        together = list(pool.map(run, range(3)))
    assert all(r.status_code == 200 for r in together), [r.text for r in together]
    assert max(int(r.headers["x-batch-images"]) for r in together) > 1
    solo = run(1)
    assert int(solo.headers["x-batch-images"]) == 1
    diff = pixels(together[1].json()["data"][0]["b64_json"]) - pixels(
        solo.json()["data"][0]["b64_json"]
    )
    assert np.abs(diff).max() <= 1


def test_edit_and_generation_refuse_each_others_models(client):
    assert_error(
        edit_json(client, model="sd-tiny", images=[{"image_url": data_url(png_bytes(64, 64))}]),
        400,
        "model_task_mismatch",
        "model",
    )
    response = client.post("/v1/images/generations", json={"model": "pix2pix-tiny", "prompt": "x"})
    assert_error(response, 400, "model_task_mismatch", "model")


def test_models_list_each_task(client):
    tasks = {m["id"]: m["task"] for m in client.get("/v1/models").json()["data"]}
    assert tasks["sd-tiny"] == "text-to-image"
    assert tasks["qwen-edit-tiny"] == "image-edit"
