"""Submitting and waiting for jobs in integration tests."""

from __future__ import annotations

import threading
import time

import httpx

from tests.integration.conftest import Delivery

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


def verified_events(deliveries: list[Delivery]) -> list[dict]:
    """The deliveries' payloads; each must have verified when it arrived (signature and
    timestamp, by the standardwebhooks package)."""
    return [delivery.event for delivery in deliveries]


class BackgroundLoop:
    """Calls `step()` in a thread, again and again, while its `with` block runs."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def step(self) -> None:
        raise NotImplementedError

    def pause(self, seconds: float) -> None:
        """Sleep between steps, waking at once when the block ends."""
        self._stop.wait(seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
