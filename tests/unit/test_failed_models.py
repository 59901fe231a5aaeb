"""A model Serve gave up starting answers 503 `model_unavailable` at once, and a call sent
before the Gateway knew is cut when it learns, instead of waiting out its deadline. The
handle stands in for Ray's (tests/reliability deploys a model that fails to load)."""

from __future__ import annotations

import asyncio

import pytest

from serve_app import ray_adapter
from serve_app.errors import ErrorCode, ServiceUnavailableError
from serve_app.ray_adapter import FailedDeployments, HandleModelBackend
from serve_app.service.readiness import ReplicaCount


class Controller:
    """What the Serve controller reports; `calls` counts the questions."""

    def __init__(self) -> None:
        self.replicas = {"sd-tiny": ReplicaCount("HEALTHY", 1, 1, 1)}
        self.calls = 0

    async def __call__(self) -> dict[str, ReplicaCount]:
        self.calls += 1
        return dict(self.replicas)

    def fail(self, name: str) -> None:
        self.replicas[name] = ReplicaCount("DEPLOY_FAILED", 0, 1, 1)


class Response:
    """What a handle call gives: taken by a replica (the awaitable the backend waits on
    first, as Ray's DeploymentResponse does), then answered; or never taken."""

    def __init__(self, answers: bool):
        self.answers = answers

    async def _fetch_future_result_async(self) -> None:
        if not self.answers:
            await asyncio.Event().wait()  # no replica ever comes

    def __await__(self):
        return self._answer().__await__()

    async def _answer(self) -> str:
        return "image"

    def cancel(self) -> None:
        pass


class Method:
    def __init__(self, answers: bool):
        self.answers = answers

    def remote(self, *args) -> Response:
        return Response(self.answers)


class Handle:
    """A deployment whose `run` answers at once, or never (no replica ever comes)."""

    def __init__(self, name: str, answers: bool):
        self.deployment_name = name
        self.run = Method(answers)


@pytest.fixture
def fast_view(monkeypatch):
    monkeypatch.setattr(ray_adapter, "FAILED_VIEW_MAX_AGE_S", 0.05)


async def test_a_failed_model_is_refused_at_once_and_others_serve(fast_view):
    controller = Controller()
    controller.fail("broken")
    failed = FailedDeployments(controller)
    failed.includes("warm-up")  # the first look starts the refresh
    await asyncio.sleep(0.01)
    broken = HandleModelBackend(Handle("broken", answers=False), failed)
    with pytest.raises(ServiceUnavailableError) as refused:
        await asyncio.wait_for(broken.run(None), 1)
    assert refused.value.code == ErrorCode.MODEL_UNAVAILABLE
    assert refused.value.retry_after_s == ray_adapter.FAILED_MODEL_RETRY_AFTER_S
    assert await HandleModelBackend(Handle("sd-tiny", answers=True), failed).run(None) == "image"


async def test_a_call_sent_before_the_failure_was_known_is_cut(fast_view):
    controller = Controller()
    failed = FailedDeployments(controller)
    backend = HandleModelBackend(Handle("broken", answers=False), failed)
    call = asyncio.ensure_future(backend.run(None))
    await asyncio.sleep(0.2)
    assert not call.done()  # still waiting for a replica
    controller.fail("broken")
    with pytest.raises(ServiceUnavailableError) as refused:
        await asyncio.wait_for(call, 2)
    assert refused.value.code == ErrorCode.MODEL_UNAVAILABLE


async def test_the_controller_is_asked_at_most_once_per_interval():
    controller = Controller()
    failed = FailedDeployments(controller)
    for _ in range(100):
        failed.includes("sd-tiny")
        await asyncio.sleep(0)
    assert controller.calls == 1


async def test_a_controller_that_does_not_answer_keeps_the_last_view(fast_view):
    controller = Controller()
    controller.fail("broken")
    failed = FailedDeployments(controller)
    failed.includes("broken")
    await asyncio.sleep(0.01)
    assert failed.includes("broken")

    async def silent():
        return None

    failed.fetch = silent
    await asyncio.sleep(0.1)
    failed.includes("broken")
    await asyncio.sleep(0.01)
    assert failed.includes("broken")
