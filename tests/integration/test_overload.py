"""Serve's own queue bound: a deployment whose `max_queued_requests` is full answers the
caller with 503 + Retry-After in the error envelope, through the Gateway's handle adapter."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.helpers import assert_error

pytestmark = pytest.mark.integration

CALLS = 8
# The calls take 1 s each, one at a time: the last of CALLS gets in after ~CALLS s.
LINE_WAIT_S = 120


@pytest.fixture(scope="module")
def overload_url(base_url):
    from fastapi import FastAPI
    from ray import serve

    from serve_app.api.errors import install_error_handlers
    from serve_app.ray_adapter import HandleModelBackend
    from serve_app.service.overload_line import OverloadLine

    # Defined here so Ray ships them by value to the replicas.
    @serve.deployment(max_ongoing_requests=1, max_queued_requests=1)
    class Slow:
        async def run(self, seconds: float) -> str:
            await asyncio.sleep(seconds)
            return "done"

        async def stream(self, seconds: float):
            await asyncio.sleep(seconds)
            yield "done"

        async def health(self) -> dict:
            return {}

    front_app = FastAPI()
    install_error_handlers(front_app)

    @serve.deployment(max_ongoing_requests=CALLS)
    @serve.ingress(front_app)
    class Front:
        def __init__(self, slow):
            self.backend = HandleModelBackend(slow)
            self.in_line = HandleModelBackend(slow, line=OverloadLine(LINE_WAIT_S))

        @front_app.get("/work")
        async def work(self) -> dict:
            return {"result": await self.backend.run(1.0)}

        @front_app.get("/stream")
        async def stream(self) -> dict:
            return {"result": [item async for item in self.backend.stream(1.0)]}

        @front_app.get("/work-in-line")
        async def work_in_line(self) -> dict:
            return {"result": await self.in_line.run(1.0)}

        @front_app.get("/stream-in-line")
        async def stream_in_line(self) -> dict:
            return {"result": [item async for item in self.in_line.stream(1.0)]}

    serve.run(Front.bind(Slow.bind()), name="overload", route_prefix="/overload")
    yield f"{base_url}/overload"
    serve.delete("overload")


async def flood(url: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=LINE_WAIT_S + 60) as client:
        return await asyncio.gather(*(client.get(url) for _ in range(CALLS)))


@pytest.mark.parametrize("route", ["work", "stream"])
def test_a_full_queue_answers_503_with_retry_after_in_the_envelope(overload_url, route):
    """`stream` is the handle's streaming call (image previews, chat deltas): its refusal
    arrives at the first item, and the call's cancellation must not raise it again."""
    answers = asyncio.run(flood(f"{overload_url}/{route}"))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    # One runs, one waits in the queue; the rest find it full.
    assert 1 <= statuses.count(200) < CALLS
    for refused in (a for a in answers if a.status_code == 503):
        assert_error(refused, 503, code="model_overloaded")
        assert refused.headers["retry-after"] == "1"


@pytest.mark.parametrize("route", ["work-in-line", "stream-in-line"])
def test_with_an_overload_line_every_request_waits_its_turn_instead(overload_url, route):
    """The same flood through the Gateway's overload line: the refused wait in the
    Gateway and are sent again as the model frees room, so every call is served."""
    answers = asyncio.run(flood(f"{overload_url}/{route}"))
    assert [a.status_code for a in answers] == [200] * CALLS, [a.text for a in answers]
    expected = "done" if route == "work-in-line" else ["done"]
    assert all(a.json() == {"result": expected} for a in answers)
