"""Ray adapters: DeploymentHandles behind the plain interfaces the image service takes
(serve_app.service.backends), for the Gateway and the JobRunner alike, and what the
Gateway asks the Serve controller."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_app.errors import ErrorCode, ServiceError, ServiceUnavailableError
from serve_app.models.chat_spec import ChatResult, ChatSpec
from serve_app.models.spec import EditSpec, GenerationResult, GenerationSpec, adapter_set_id
from serve_app.prompts import PromptRequest, RenderedPrompt
from serve_app.service.overload_line import OverloadLine
from serve_app.service.readiness import ReplicaCount

# A health check answers within seconds, whatever the controller is doing.
CONTROLLER_TIMEOUT_S = 2.0
# How old the controller's view of failed deployments may get before it is asked again.
FAILED_VIEW_MAX_AGE_S = 5.0
# What a stream that ends before its first item gives the line.
_ENDED = object()
# A model Serve gave up starting stays down until an operator redeploys it.
FAILED_MODEL_RETRY_AFTER_S = 30


async def _answer(response) -> Any:
    """A handle call's result, with its errors as _service_errors turns them."""
    with _service_errors():
        return await response


async def _ready(value: Any) -> Any:
    return value


async def _call(handle_method, *args) -> Any:
    """Await a handle call; errors come out as the ServiceError the callee raised, or a 503."""
    return await _answer(handle_method.remote(*args))


@contextlib.contextmanager
def _service_errors() -> Iterator[None]:
    try:
        yield
    except RayTaskError as error:
        if isinstance(error.cause, ServiceError):
            raise error.cause from None
        raise
    except BackPressureError:
        raise ServiceUnavailableError(
            "the model is at capacity; retry shortly", code=ErrorCode.MODEL_OVERLOADED
        ) from None
    except (RayActorError, DeploymentUnavailableError):
        raise ServiceUnavailableError(
            "a replica was lost while serving this request; retry",
            code=ErrorCode.REPLICA_UNAVAILABLE,
        ) from None


def _cancel_quietly(response) -> None:
    """Cancel a handle call whatever became of it. Where Serve's router runs in its own
    loop, `cancel()` reads the call's result first and raises what the call raised (the
    router's BackPressureError, say), which would replace the envelope error already on
    its way to the caller."""
    with contextlib.suppress(Exception):
        response.cancel()


class HandlePromptBackend:
    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def render(self, request: PromptRequest) -> RenderedPrompt:
        return await _call(self.handle.render, request)

    async def listing(self) -> dict[str, list[dict]]:
        return await _call(self.handle.listing)


class FailedDeployments:
    """The deployments of this application that Serve gave up starting (their constructor
    failed every retry: a checkpoint that does not load, a card without the memory), as
    the controller reported them at most FAILED_VIEW_MAX_AGE_S ago. A call to one would
    wait for a replica that never comes, up to the request's deadline. Refreshed in the
    background, so no request waits for the controller."""

    def __init__(self, fetch=None):
        self.fetch = fetch or deployment_replicas
        self.names: frozenset[str] = frozenset()
        self.fetched_at = -math.inf
        self._refresh: asyncio.Task | None = None

    def includes(self, name: str) -> bool:
        stale = time.monotonic() - self.fetched_at > FAILED_VIEW_MAX_AGE_S
        if stale and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._fetch())
        return name in self.names

    async def _fetch(self) -> None:
        replicas = await self.fetch()
        self.fetched_at = time.monotonic()
        if replicas is not None:
            self.names = frozenset(
                name
                for name, count in replicas.items()
                # Not UNHEALTHY: that is a replica Serve is restarting, and its calls
                # wait for the new one (a job's lost replica costs it no attempt).
                if count.running == 0 and count.status == "DEPLOY_FAILED"
            )


class HandleModelBackend:
    def __init__(
        self,
        handle: DeploymentHandle,
        failed: FailedDeployments | None = None,
        line: OverloadLine | None = None,
    ):
        self.handle = handle
        self.failed = failed
        # Off unless given: the JobRunner has its own way with a full model (the job waits).
        self.line = line or OverloadLine(0)

    def _for(self, spec: GenerationSpec | EditSpec | ChatSpec) -> DeploymentHandle:
        """The handle for a request: one with LoRA adapters goes, where Serve can, to a
        replica that already holds its set (the set is its multiplexed model id)."""
        set_id = adapter_set_id(getattr(spec, "adapters", ()))
        if not set_id:
            return self.handle
        return self.handle.options(multiplexed_model_id=set_id)

    def _check_started(self) -> None:
        if self.failed is not None and self.failed.includes(self.handle.deployment_name):
            error = ServiceUnavailableError(
                "this model failed to start and serves nothing until it is redeployed; "
                "the other models are unaffected",
                code=ErrorCode.MODEL_UNAVAILABLE,
            )
            error.retry_after_s = FAILED_MODEL_RETRY_AFTER_S
            raise error

    async def run(
        self, spec: GenerationSpec | EditSpec | ChatSpec
    ) -> GenerationResult | ChatResult:
        self._check_started()
        handle = self._for(spec)

        async def send() -> Awaitable[Any]:
            response = handle.run.remote(spec)
            try:
                with _service_errors():
                    # Returns once Serve assigned the call to a replica: the method
                    # `await response` itself starts with (no public one says "taken").
                    await response._fetch_future_result_async()
            except BaseException:
                _cancel_quietly(response)
                raise
            return _answer(response)

        call = asyncio.ensure_future(self.line.send(send))
        try:
            # A call sent while the view was stale, to a model that then failed to start,
            # would wait for a replica until the request's deadline: look again now and then.
            while True:
                done, _ = await asyncio.wait({call}, timeout=FAILED_VIEW_MAX_AGE_S)
                if done:
                    return call.result()
                self._check_started()
        finally:
            call.cancel()

    async def stream(self, spec: GenerationSpec | EditSpec | ChatSpec) -> AsyncIterator[Any]:
        """A replica's streamed answer (chat deltas, or image previews); closing this
        iterator (the client went away) cancels the replica's generator, which abandons
        the request there."""
        self._check_started()
        handle = self._for(spec).options(stream=True)
        generator = None

        async def send() -> Awaitable[Any]:
            nonlocal generator
            if generator is not None:  # refused: its generator ended
                _cancel_quietly(generator)
            generator = handle.stream.remote(spec)
            # Replicas answer a stream's first item at once (StreamAccepted), so it marks
            # the call taken; a refusal for capacity comes instead of it.
            with _service_errors():
                first = await anext(generator, _ENDED)
            return _ready(first)

        try:
            first = await self.line.send(send)
            if first is _ENDED:
                return
            yield first
            with _service_errors():
                async for item in generator:
                    yield item
        finally:
            if generator is not None:
                _cancel_quietly(generator)

    async def health(self) -> dict[str, Any]:
        return await _call(self.handle.health)


def backends(
    templater: DeploymentHandle, models: dict[str, DeploymentHandle], overload_wait_s: float = 0
) -> tuple[HandlePromptBackend, dict[str, HandleModelBackend]]:
    """The image service's backends over the graph's handles (Gateway and JobRunner);
    `overload_wait_s` gives each model an overload line (the Gateway's)."""
    failed = FailedDeployments()
    return HandlePromptBackend(templater), {
        name: HandleModelBackend(handle, failed, OverloadLine(overload_wait_s))
        for name, handle in models.items()
    }


async def deployment_replicas() -> dict[str, ReplicaCount] | None:
    """This application's deployments as the Serve controller sees them; None when it
    does not answer (Serve keeps serving without it)."""
    from ray.serve.context import _get_global_client

    try:
        app = serve.get_replica_context().app_name
        controller = _get_global_client()._controller
        details = await asyncio.wait_for(
            controller.get_serve_instance_details.remote(), CONTROLLER_TIMEOUT_S
        )
        deployments = details["applications"][app]["deployments"]
    except Exception:  # a busy or restarting controller must not fail a health check
        return None
    return {name: replica_count(deployment) for name, deployment in deployments.items()}


def replica_count(deployment: dict[str, Any]) -> ReplicaCount:
    """From one deployment of the controller's `ServeInstanceDetails`."""
    config = deployment.get("deployment_config") or {}
    autoscaling = config.get("autoscaling_config")
    if autoscaling:
        floor = int(autoscaling.get("min_replicas", 1))
    else:
        floor = int(config.get("num_replicas") or 1)
    running = sum(1 for r in deployment.get("replicas", []) if r.get("state") == "RUNNING")
    status = deployment.get("status")
    return ReplicaCount(
        status=str(getattr(status, "value", status)),  # an enum, or its value
        running=running,
        target=int(deployment.get("target_num_replicas", floor)),
        min_replicas=floor,
    )


def proxy_host() -> str | None:
    """The host Serve's HTTP proxies bind (`http_options.host`), from the controller."""
    from ray.serve.context import _get_global_client

    return _get_global_client().http_config.host


def assigned_cpu_threads() -> int:
    """Threads for this actor's CPU work: the whole CPUs Serve reserved for it
    (`ray_actor_options.num_cpus`), at least one. Ray sets no OMP_NUM_THREADS for
    fractional CPUs, and torch would otherwise take every core of the machine, which
    oversubscribes a node shared by several replicas."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))
