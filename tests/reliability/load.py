"""Traffic for the campaign: closed-loop callers on an event loop of their own, every answer
kept with its time, status, latency and what a client needs to retry (Retry-After, the
error envelope); resident memory of named replicas sampled beside it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from tests.integration.jobs_helpers import BackgroundLoop
from tests.reliability.service import Campaign, rss_mib

GENERATION = {"model": "sd-tiny", "prompt": "a lamp on a desk", "size": "64x64", "steps": 2}
ENVELOPE_FIELDS = {"message", "type", "param", "code", "request_id"}


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer came
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    latency_s: float
    retry_after: str | None
    code: str | None  # the envelope's error code; None for a 2xx or a body without one
    enveloped: bool  # an error body that is the API's envelope
    metered: bool = False  # carried RateLimit headers: the shared rate limiter answered


def read_answer(started: float, response: httpx.Response) -> Answer:
    code, enveloped = None, False
    if response.status_code >= 400:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            error = json.loads(response.content)["error"]
            enveloped = set(error) >= ENVELOPE_FIELDS
            code = error.get("code")
    return Answer(
        time.monotonic(),
        response.status_code,
        time.monotonic() - started,
        response.headers.get("retry-after"),
        code,
        enveloped,
        "ratelimit-policy" in response.headers,
    )


class ClosedLoop:
    """`clients` callers, each posting `body` to `path` again as soon as its last answer
    came, until the block ends; the callers share one event loop on a thread of its own."""

    def __init__(
        self, url: str, clients: int, body: dict = GENERATION, path: str = "/v1/images/generations"
    ):
        self.url, self.clients, self.body, self.path = url, clients, body, path
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=120, limits=limits) as client:
            await asyncio.gather(*(self._caller(client) for _ in range(self.clients)))

    async def _caller(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = await client.post(self.path, json=self.body)
                self.answers.append(read_answer(started, response))
            except httpx.HTTPError:
                self.answers.append(
                    Answer(time.monotonic(), 0, time.monotonic() - started, None, None, False)
                )
                await asyncio.sleep(0.2)  # a refused connection answers at once

    def __enter__(self) -> ClosedLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=180)
        assert not self._thread.is_alive(), "a caller did not finish within its timeout"


def statuses(answers: list[Answer]) -> dict[str, int]:
    return {
        str(status): count for status, count in sorted(Counter(a.status for a in answers).items())
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RssSampler(BackgroundLoop):
    """Resident memory (MiB) of each named deployment's replica, once a second."""

    def __init__(self, campaign: Campaign, deployments: tuple[str, ...]):
        super().__init__()
        self.campaign = campaign
        self.samples: dict[str, list[float]] = {d: [] for d in deployments}

    def step(self) -> None:
        for deployment, samples in self.samples.items():
            for pid in self.campaign.replica_pids(deployment)[:1]:
                rss = rss_mib(pid)
                if rss is not None:
                    samples.append(rss)
        self.pause(1)

    def summary(self, deployment: str) -> dict[str, float]:
        values = self.samples[deployment]
        half = values[len(values) // 2 :]
        return {
            "start": round(values[0]),
            "peak": round(max(values)),
            "end": round(values[-1]),
            # Growth over the second half: what "levels off" means here.
            "second_half_growth": round(max(half) - half[0]),
        }


class SdkFleet:
    """`callers` OpenAI SDK clients as shipped (two retries, each after the Retry-After
    given), one thread each, every caller sending `rounds` image requests in a row. Kept:
    each request's outcome (1 image, or the SDK's error) and when each HTTP attempt left."""

    def __init__(self, url: str, model: str, callers: int, rounds: int = 1):
        self.url, self.model, self.callers, self.rounds = url, model, callers, rounds
        self.completed: list[float] = []  # latency of each request that got its image
        self.failed: list[Exception] = []
        self.attempts: dict[tuple[int, int], list[float]] = {}
        self._lock = threading.Lock()

    def run(self, timeout_s: float = 600) -> float:
        """Seconds the fleet took; every caller's thread is done when it returns."""
        started = time.monotonic()
        threads = [threading.Thread(target=self._caller, args=(i,)) for i in range(self.callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, started + timeout_s - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "an SDK caller did not finish in time"
        return time.monotonic() - started

    def _caller(self, index: int) -> None:
        import openai

        current = {"round": 0}

        def sent(_request: httpx.Request) -> None:  # on this caller's thread
            self.attempts.setdefault((index, current["round"]), []).append(time.monotonic())

        http = openai.DefaultHttpxClient(event_hooks={"request": [sent]})
        client = openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="unused-locally", http_client=http
        )
        try:
            for round_index in range(self.rounds):
                current["round"] = round_index
                started = time.monotonic()
                try:
                    result = client.images.generate(
                        model=self.model,
                        prompt=f"sdk caller {index}",
                        size="64x64",
                        response_format="b64_json",
                        extra_body={"steps": 2},
                    )
                    assert len(result.data) == 1, result
                    with self._lock:
                        self.completed.append(time.monotonic() - started)
                except openai.OpenAIError as error:
                    with self._lock:
                        self.failed.append(error)
        finally:
            client.close()
