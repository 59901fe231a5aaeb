"""Submitting and waiting for jobs in integration tests."""

from __future__ import annotations

import json
import time

import httpx
from standardwebhooks import Webhook

from tests.integration.conftest import WEBHOOK_SECRET

TERMINAL = {"succeeded", "failed", "canceled"}


def generation_job(prompt: str = "a red chair", **request) -> dict:
    body = {"model": "sd-tiny", "prompt": prompt, "size": "64x64", "steps": 2, **request}
    return {"type": "image_generation", "request": body}


def wait_for_job(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end in {timeout_s} s: {job}")


def wait_until(condition, timeout_s: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not met in {timeout_s} s")


def verified_events(deliveries: list[tuple[str, dict[str, str], bytes]]) -> list[dict]:
    """Every delivery checked with the standardwebhooks package; their payloads."""
    webhook = Webhook(WEBHOOK_SECRET)
    events = []
    for _path, headers, body in deliveries:
        webhook.verify(body, headers)  # raises on a bad signature or a stale timestamp
        events.append({"id": headers["webhook-id"], **json.loads(body)})
    return events
