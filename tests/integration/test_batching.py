"""Concurrent requests meet in one pipeline call, and a batched request gets the
images it would have got alone.

Bitwise equality is not promised: CPU GEMM kernels block differently for other batch
shapes and Z-Image pads captions to the longest in the batch, so pixels may move by
one step of 255 (see README, "Batching"). GLM-Image runs every request alone.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.helpers import pixels

pytestmark = pytest.mark.integration

REQUESTS = [
    {"prompt": "a red bicycle", "seed": 101, "n": 1},
    {"prompt": "a green teapot on a shelf", "seed": 202, "n": 2},
    {"prompt": "a blue umbrella", "seed": 303, "n": 1, "negative_prompt": "blurry"},
    {"prompt": "an orange cat asleep in the sun", "seed": 404, "n": 1},
]


def generate(client, model, request):
    body = {"model": model, "size": "64x64", "steps": 2, **request}
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    images = [pixels(item["b64_json"]) for item in response.json()["data"]]
    return images, int(response.headers["x-batch-images"])


@pytest.mark.parametrize("model", ["z-image-tiny", "sd-tiny"])
def test_concurrent_requests_are_batched_and_match_solo(client, model):
    solo = []
    for request in REQUESTS:
        images, batch_images = generate(client, model, request)
        assert batch_images == request["n"]  # ran alone
        solo.append(images)

    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        batched = list(pool.map(lambda r: generate(client, model, r), REQUESTS))

    assert max(batch for _, batch in batched) > max(r["n"] for r in REQUESTS)
    for alone, (together, _) in zip(solo, batched, strict=True):
        assert len(alone) == len(together)
        for a, b in zip(alone, together, strict=True):
            assert a.shape == b.shape
            assert np.abs(a - b).max() <= 1


def test_glm_image_requests_never_share_a_call(client):
    request = {"prompt": "a glass vase", "seed": 7, "n": 1}
    alone, _ = generate(client, "glm-image-tiny", request)
    with ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(
                lambda r: generate(client, "glm-image-tiny", r),
                [request, {**request, "seed": 8}, {**request, "prompt": "a tin robot"}],
            )
        )
    assert all(batch == 1 for _, batch in results)
    assert np.array_equal(alone[0], results[0][0][0])
