"""Streamed images, job events and cancellation through the real Serve application: the
openai SDK unchanged, a real SSE client, and clients that go away. Tiny models: what is
asserted is counts, order, byte equality and time saved, never how a picture looks."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import numpy as np
import pytest
from httpx_sse import connect_sse

from tests.helpers import decode, pixels, png_bytes
from tests.integration.jobs_helpers import wait_for_job, wait_until
from tests.integration.test_observability import scrape, total

SLOW = "sd-slow-tiny"


def test_sdk_generate_streams_partials_then_the_same_image_as_unstreamed(openai_client):
    common = {"model": "sd-tiny", "prompt": "a lamp", "size": "64x64"}
    stream = openai_client.images.generate(
        **common, stream=True, partial_images=2, extra_body={"seed": 31, "steps": 4}
    )
    events = list(stream)
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    assert all(decode(event.b64_json).size == (32, 32) for event in events[:2])
    completed = events[-1]
    assert completed.size == "64x64" and completed.output_format == "png"
    assert completed.usage.total_tokens == 0  # diffusion is not billed by tokens
    plain = openai_client.images.generate(**common, extra_body={"seed": 31, "steps": 4})
    assert completed.b64_json == plain.data[0].b64_json


def test_sdk_edit_streams_partials_then_the_same_image_as_unstreamed(openai_client):
    common = {"model": "pix2pix-tiny", "prompt": "make it blue", "size": "64x64"}
    photo = png_bytes(64, 64, seed=7)
    stream = openai_client.images.edit(
        **common,
        image=("photo.png", photo, "image/png"),
        stream=True,
        partial_images=2,
        extra_body={"seed": 12, "steps": 4},
    )
    events = list(stream)
    assert [event.type for event in events] == [
        "image_edit.partial_image",
        "image_edit.partial_image",
        "image_edit.completed",
    ]
    plain = openai_client.images.edit(
        **common, image=("photo.png", photo, "image/png"), extra_body={"seed": 12, "steps": 4}
    )
    assert events[-1].b64_json == plain.data[0].b64_json


def test_sdk_stream_refusals_raise_before_any_event(openai_client):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.images.generate(
            model="sd-tiny", prompt="x", stream=True, partial_images=2, extra_body={"steps": 99}
        )
    assert refused.value.code == "invalid_steps"


def wait_for_series(metrics_url: str, name: str, at_least: float, **labels: str) -> float:
    """The metric's total once it reaches `at_least` (workers push every second)."""
    return wait_until(
        lambda: (value := total(scrape(metrics_url), name, **labels)) >= at_least and value,
        timeout_s=60,
        what=f"{name} {labels} >= {at_least}",
    )


def seconds_per_step(client: httpx.Client) -> float:
    """This machine's pace on the slow model at 256x256, from a short request."""
    client.post(
        "/v1/images/generations",
        json={"model": SLOW, "prompt": "warm", "size": "256x256", "steps": 2},
    )
    started = time.monotonic()
    response = client.post(
        "/v1/images/generations",
        json={"model": SLOW, "prompt": "pace", "size": "256x256", "steps": 40},
    )
    assert response.status_code == 200, response.text
    return (time.monotonic() - started) / 40


def quick_request_seconds(client: httpx.Client) -> float:
    started = time.monotonic()
    response = client.post(
        "/v1/images/generations",
        json={"model": SLOW, "prompt": "next", "size": "64x64", "steps": 2},
    )
    assert response.status_code == 200, response.text
    return time.monotonic() - started


ABANDONED_STEPS = 1500


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "plain"])
def test_a_client_that_leaves_frees_the_replica(client, base_url, metrics_url, streamed):
    pace = seconds_per_step(client)
    full_run = ABANDONED_STEPS * pace
    series = "ray_image_serving_denoising_steps_saved_total"
    saved_before = total(scrape(metrics_url), series, model=SLOW)
    body = {"model": SLOW, "prompt": "abandoned", "size": "256x256", "steps": ABANDONED_STEPS}
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(600, read=1.5)) as leaving:
        if streamed:
            with leaving.stream(
                "POST", "/v1/images/generations", json={**body, "stream": True}
            ) as response:
                assert response.status_code == 200  # accepted: its call is under way
                time.sleep(1.5)
        else:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up after 1.5 s
                leaving.post("/v1/images/generations", json=body)
    took = quick_request_seconds(client)
    # The abandoned call would have held the replica for `full_run` seconds more.
    assert took < 0.25 * full_run, (took, full_run)
    saved = wait_for_series(metrics_url, series, saved_before + 1, model=SLOW) - saved_before
    assert saved > ABANDONED_STEPS / 2


def test_a_canceled_running_job_stops_and_frees_the_replica(client, metrics_url):
    pace = seconds_per_step(client)
    series = "ray_image_serving_denoising_steps_saved_total"
    saved_before = total(scrape(metrics_url), series, model=SLOW)
    job = client.post(
        "/v1/jobs",
        json={
            "type": "image_generation",
            "request": {"model": SLOW, "prompt": "long", "size": "256x256", "steps": 2000},
        },
    ).json()
    wait_until(
        lambda: (client.get(f"/v1/jobs/{job['id']}").json()["progress"] or {}).get("step"),
        timeout_s=60,
        what="the job's first steps",
    )
    canceled = client.delete(f"/v1/jobs/{job['id']}").json()
    assert canceled["status"] == "canceled"
    took = quick_request_seconds(client)
    assert took < 0.25 * 2000 * pace, (took, pace)
    saved = wait_for_series(metrics_url, series, saved_before + 1, model=SLOW) - saved_before
    # Stopped within a step of the cancel: what ran is about what the job had done.
    ran = 2000 - saved
    assert ran < 2000 / 2
    final = wait_for_job(client, job["id"])
    assert final["status"] == "canceled" and final["result"] is None


def test_job_events_through_a_real_sse_client_and_resume(client, base_url):
    job = client.post(
        "/v1/jobs",
        json={
            "type": "image_generation",
            "request": {
                "model": SLOW,
                "prompt": "watched",
                "size": "128x128",
                "steps": 60,
                "partial_images": 2,
            },
        },
    ).json()
    received: list = []
    with (
        httpx.Client(base_url=base_url, timeout=120) as http,
        connect_sse(
            http, "GET", f"/v1/jobs/{job['id']}/events", params={"previews": "true"}
        ) as source,
    ):
        assert source.response.status_code == 200
        for event in source.iter_sse():
            received.append(event)
    # A queue event has no id of its own (a client keeps the last one: it is not replayed).
    with_ids = [(int(event.id), event.event) for event in received if event.event != "queue"]
    ids = [seq for seq, _ in with_ids]
    assert ids == list(range(1, len(ids) + 1))  # in order, none missed, none twice
    statuses = [json.loads(e.data)["status"] for e in received if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    steps = [json.loads(e.data)["step"] for e in received if e.event == "progress"]
    assert steps and steps == sorted(steps) and steps[-1] == 60
    previews = [json.loads(e.data) for e in received if e.event == "preview"]
    assert [p["partial_image_index"] for p in previews] == [0, 1]
    assert decode(previews[0]["b64_json"]).size == (64, 64)
    final = json.loads(received[-1].data)
    assert final["status"] == "succeeded" and final["job"]["result"]["images"][0]["url"]

    # Reconnecting with Last-Event-ID resumes after that event (previews only when asked
    # for), and the stream of an ended job closes at once.
    middle = ids[len(ids) // 2]
    with (
        httpx.Client(base_url=base_url, timeout=120) as http,
        connect_sse(
            http,
            "GET",
            f"/v1/jobs/{job['id']}/events",
            headers={"Last-Event-ID": str(middle)},
        ) as source,
    ):
        resumed = [int(event.id) for event in source.iter_sse() if event.event != "queue"]
    assert resumed == [seq for seq, kind in with_ids if seq > middle and kind != "preview"]


def test_job_events_belong_to_the_jobs_tenant(client):
    assert client.get("/v1/jobs/job_nothere/events").status_code == 404


def test_many_streams_at_once_each_get_their_own_images(base_url):
    """Four streams meet in the replica's batches; each gets its own previews and images,
    each within a level of its request made alone (as any batched request is: the batched
    matrix products round differently, tests/integration/test_batching.py)."""
    results: dict[int, tuple[list[dict], str]] = {}
    body = {"model": "sd-tiny", "prompt": "together", "size": "64x64", "steps": 4}

    def stream(seed: int) -> None:
        with httpx.Client(base_url=base_url, timeout=120) as http:
            response = http.post(
                "/v1/images/generations",
                json={**body, "seed": seed, "stream": True, "partial_images": 1},
            )
        events = [
            json.loads(line[6:])
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        results[seed] = (events, response.text)

    threads = [threading.Thread(target=stream, args=(seed,)) for seed in range(40, 44)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The streams shared pipeline calls, as requests that are not streamed do.
    assert max(events[-1]["batch_images"] for events, _ in results.values()) > 1
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for seed, (events, text) in results.items():
            assert [e["type"] for e in events] == [
                "image_generation.partial_image",
                "image_generation.completed",
            ], text
            assert text.endswith("data: [DONE]\n\n")
            assert events[-1]["seed"] == seed
            assert base64.b64decode(events[0]["b64_json"])[:4] == b"\x89PNG"
            alone = http.post("/v1/images/generations", json={**body, "seed": seed}).json()
            difference = pixels(events[-1]["b64_json"]) - pixels(alone["data"][0]["b64_json"])
            assert np.abs(difference).max() <= 1
