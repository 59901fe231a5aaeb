"""Durable jobs and batches on the real application: submission, results, Idempotency-Key,
cancel, paging, and signed webhooks to a receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import assert_error, pixels
from tests.integration.jobs_helpers import (
    generation_job,
    verified_events,
    wait_for_job,
    wait_until,
)

pytestmark = pytest.mark.integration


def job_files(app_args: dict, job_id: str) -> list[str]:
    folder = Path(app_args["storage"]["root"]) / "jobs" / job_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_generation_job_runs_and_keeps_its_images(client, app_args):
    response = client.post(
        "/v1/jobs",
        json={**generation_job("a red chair", n=2), "metadata": {"sku": "A-1"}},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["metadata"] == {"sku": "A-1"}

    done = wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1 and done["error"] is None
    assert done["progress"] == {"step": 2, "total": 2}
    assert done["timings"]["running_s"] is not None
    result = done["result"]
    assert (result["model"], result["size"], result["steps"]) == ("sd-tiny", "64x64", 2)
    first_seed = result["images"][0]["seed"]
    assert [image["seed"] for image in result["images"]] == [first_seed, first_seed + 1]
    for image in result["images"]:
        download = client.get(image["url"])
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == image["sha256"]
        assert Image.open(io.BytesIO(download.content)).size == (64, 64)
    assert job_files(app_args, job["id"]) == ["0.png", "1.png"]

    # The seed was fixed at submission: the sync API with that seed makes the same image
    # (within 1/255: the job may have shared a batch).
    sync = client.post(
        "/v1/images/generations",
        json={**generation_job("a red chair")["request"], "seed": first_seed},
    ).json()
    stored = client.get(result["images"][0]["url"]).content
    as_b64 = base64.b64encode(stored).decode()
    assert np.abs(pixels(sync["data"][0]["b64_json"]) - pixels(as_b64)).max() <= 1


def test_an_edit_job_takes_a_data_url(client):
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 40, 40)).save(buffer, "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    request = {
        "model": "qwen-edit-tiny",
        "prompt": "make it blue",
        "steps": 2,
        "images": [{"image_url": data_url}],
    }
    job = client.post("/v1/jobs", json={"type": "image_edit", "request": request}).json()
    done = wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["size"] == "320x208"


def test_a_request_that_fails_when_run_ends_failed_with_its_error(client):
    job = client.post(
        "/v1/jobs", json=generation_job(template="no-such-template", variables={})
    ).json()
    done = wait_for_job(client, job["id"])
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"]["code"] and done["error"]["message"]
    assert done["attempts"] == 1  # a 4xx is not retried


def job_ids(client) -> list[str]:
    """The tenant's jobs, by id: a job's links are signed afresh on every read."""
    return [job["id"] for job in client.get("/v1/jobs", params={"limit": 100}).json()["data"]]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (generation_job(bogus=1), 400, "invalid_parameter", "request.bogus"),
        # Every error names its field where it sits in the body (`request.model`).
        (generation_job(model="no-such-model"), 404, "model_not_found", "request.model"),
        (generation_job(model="qwen-edit-tiny"), 400, "model_task_mismatch", "request.model"),
        (generation_job(steps=500), 400, "invalid_steps", "request.steps"),
        ({"type": "chat", "request": {}}, 400, "invalid_parameter", "request.messages"),
        ({"type": "video", "request": {}}, 400, "invalid_parameter", "type"),
        ({"type": "image_upscale", "request": {}}, 400, "invalid_parameter", "type"),
        (
            {**generation_job(), "callback_url": "http://10.1.2.3/hook"},
            400,
            "url_forbidden",
            "callback_url",
        ),
        (
            {**generation_job(), "metadata": {"k": "v" * 600}},
            400,
            "invalid_parameter",
            "metadata.k",
        ),
    ],
)
def test_bad_jobs_are_refused_at_submission(client, body, status, code, param):
    before = job_ids(client)
    assert_error(client.post("/v1/jobs", json=body), status, code, param)
    assert job_ids(client) == before


def test_a_batch_with_one_bad_job_creates_nothing(client):
    before = job_ids(client)
    body = {"jobs": [generation_job("fine"), generation_job(prompt=None)]}
    assert_error(
        client.post("/v1/batches", json=body), 400, "invalid_parameter", "jobs.1.request.prompt"
    )
    # Refusals that need the model's limits name the job too.
    body = {"jobs": [generation_job("fine"), generation_job(steps=500)]}
    assert_error(
        client.post("/v1/batches", json=body), 400, "invalid_steps", "jobs.1.request.steps"
    )
    assert job_ids(client) == before


def test_fifty_identical_posts_with_one_idempotency_key_make_one_job(base_url, client):
    body = generation_job("idempotent chair")
    key = "order-7781-main-image"
    barrier = threading.Barrier(50)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def post():
        with httpx.Client(base_url=base_url, timeout=60) as own:
            barrier.wait()
            response = own.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=post) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted({r.status_code for r in answers})
    assert set(statuses) <= {202, 409}, [r.text for r in answers if r.status_code not in (202, 409)]
    ids = {r.json()["id"] for r in answers if r.status_code == 202}
    assert len(ids) == 1
    for refused in (r for r in answers if r.status_code == 409):
        assert_error(refused, 409, "idempotency_key_in_use")
        assert refused.headers["retry-after"]
    (job_id,) = ids
    listed = client.get("/v1/jobs", params={"limit": 100}).json()["data"]
    assert [j["id"] for j in listed if j["id"] == job_id] == [job_id]

    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 202 and again.json()["id"] == job_id
    assert again.headers["idempotent-replayed"] == "true"
    other = client.post(
        "/v1/jobs", json=generation_job("another chair"), headers={"Idempotency-Key": key}
    )
    assert_error(other, 422, "idempotency_key_reused")
    assert_error(
        client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k" * 300}),
        400,
        "invalid_idempotency_key",
    )
    assert wait_for_job(client, job_id)["status"] == "succeeded"


def test_cancel_stops_a_job_and_keeps_no_images(client, app_args):
    job = client.post("/v1/jobs", json=generation_job("slow", size="512x512", steps=20, n=4)).json()
    canceled = client.delete(f"/v1/jobs/{job['id']}")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"
    # Whatever the worker was doing, the job stays canceled and keeps nothing.
    wait_until(
        lambda: (
            job_files(app_args, job["id"]) == []
            and not client.get(f"/v1/jobs/{job['id']}").json()["result"]
        ),
        timeout_s=30,
        what="no images for the canceled job",
    )
    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "canceled" and final["error"]["code"] == "canceled"

    finished = client.post("/v1/jobs", json=generation_job("quick")).json()
    wait_for_job(client, finished["id"])
    assert_error(client.delete(f"/v1/jobs/{finished['id']}"), 409, "job_not_cancelable")
    assert_error(client.delete("/v1/jobs/job_0000"), 404, "job_not_found")
    assert_error(client.get("/v1/jobs/job_0000"), 404, "job_not_found")


def test_listing_pages_newest_first(client):
    made = [
        client.post("/v1/jobs", json=generation_job(f"page {i}")).json()["id"] for i in range(5)
    ]
    first = client.get("/v1/jobs", params={"limit": 3}).json()
    assert [j["id"] for j in first["data"]] == made[::-1][:3] and first["has_more"]
    second = client.get("/v1/jobs", params={"limit": 2, "after": first["last_id"]}).json()
    assert [j["id"] for j in second["data"]] == made[::-1][3:5]
    assert_error(client.get("/v1/jobs", params={"limit": 1000}), 400, "invalid_parameter")
    assert_error(client.get("/v1/jobs", params={"status": "done"}), 400, "invalid_parameter")
    for job_id in made:
        wait_for_job(client, job_id)


def test_a_batch_completes_with_one_signed_webhook(client, webhook_receiver):
    body = {
        "jobs": [generation_job(f"catalog item {i}") for i in range(4)],
        "callback_url": webhook_receiver.url("/ok"),
        "metadata": {"import": "spring-catalog"},
    }
    response = client.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert response.headers["location"] == f"/v1/batches/{batch['id']}"
    assert batch["total"] == 4 and len(batch["job_ids"]) == 4

    done = wait_until(
        lambda: (
            (b := client.get(f"/v1/batches/{batch['id']}").json())["status"] == "completed" and b
        ),
        what="batch completed",
    )
    assert done["counts"]["succeeded"] == 4 and done["finished_at"]
    listed = client.get("/v1/jobs", params={"batch_id": batch["id"]}).json()["data"]
    assert sorted(j["id"] for j in listed) == sorted(batch["job_ids"])

    wait_until(
        lambda: client.get(f"/v1/batches/{batch['id']}").json()["webhook"]["status"] == "delivered",
        what="batch webhook delivered",
    )
    events = [
        e
        for e in verified_events(webhook_receiver.received("/ok"))
        if e["data"]["id"] == batch["id"]
    ]
    assert [e["type"] for e in events] == ["batch.completed"]
    assert events[0]["data"]["counts"]["succeeded"] == 4
    assert events[0]["data"]["metadata"] == {"import": "spring-catalog"}
    assert events[0]["data"]["job_ids"] == batch["job_ids"]


def test_webhooks_are_retried_after_500_with_the_same_id_and_body(client, webhook_receiver):
    job = client.post(
        "/v1/jobs",
        json={**generation_job("flaky hook"), "callback_url": webhook_receiver.url("/flaky")},
    ).json()
    assert wait_for_job(client, job["id"])["status"] == "succeeded"
    state = wait_until(
        lambda: (
            (w := client.get(f"/v1/jobs/{job['id']}").json()["webhook"])["status"] == "delivered"
            and w
        ),
        what="webhook delivered after retries",
    )
    assert state["attempts"] == 3 and state["last_status_code"] == 204
    mine = [d for d in webhook_receiver.received("/flaky") if job["id"].encode() in d.body]
    events = verified_events(mine)
    assert len(events) == 3
    assert len({e["id"] for e in events}) == 1 and events[0]["id"] == state["id"]
    assert len({d.body for d in mine}) == 1  # the same bytes each time
    assert events[0]["type"] == "job.succeeded" and events[0]["data"]["status"] == "succeeded"


def test_redirects_are_not_followed_and_410_disables(client, webhook_receiver):
    moved = client.post(
        "/v1/jobs",
        json={**generation_job("moved hook"), "callback_url": webhook_receiver.url("/moved")},
    ).json()
    gone = client.post(
        "/v1/jobs",
        json={**generation_job("gone hook"), "callback_url": webhook_receiver.url("/gone")},
    ).json()
    moved_state = wait_until(
        lambda: (
            (w := client.get(f"/v1/jobs/{moved['id']}").json()["webhook"])
            and w["status"] == "failed"
            and w
        ),
        what="redirected webhook given up",
    )
    # One first try and one per retry in the schedule, each answered 302, none followed.
    assert moved_state["attempts"] == 5 and moved_state["last_status_code"] == 302
    assert not any(moved["id"].encode() in d.body for d in webhook_receiver.received("/ok"))
    gone_state = wait_until(
        lambda: (
            (w := client.get(f"/v1/jobs/{gone['id']}").json()["webhook"])
            and w["status"] == "disabled"
            and w
        ),
        what="410 disables",
    )
    assert gone_state["attempts"] == 1 and gone_state["last_status_code"] == 410
