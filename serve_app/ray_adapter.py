"""Ray adapters: DeploymentHandles behind the plain interfaces serve_app's serving logic
takes (serve_app.api.backends), for the Gateway and the JobRunner alike."""

from __future__ import annotations

from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_app.api.serving import GatewayService
from serve_app.config import AppConfig
from serve_app.errors import ServiceError, ServiceUnavailableError
from serve_app.models.spec import EditSpec, GenerationResult, GenerationSpec
from serve_app.observability.metrics import ServiceMetrics
from serve_app.prompts import PromptRequest, RenderedPrompt
from serve_app.storage import build_storage


async def _call(handle_method, *args) -> Any:
    """Await a handle call; errors come out as the ServiceError the callee raised, or a 503."""
    try:
        return await handle_method.remote(*args)
    except RayTaskError as error:
        if isinstance(error.cause, ServiceError):
            raise error.cause from None
        raise
    except BackPressureError:
        raise ServiceUnavailableError(
            "the model is at capacity; retry shortly", code="model_overloaded"
        ) from None
    except (RayActorError, DeploymentUnavailableError):
        raise ServiceUnavailableError(
            "a replica was lost while serving this request; retry", code="replica_unavailable"
        ) from None


class HandlePromptBackend:
    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def render(self, request: PromptRequest) -> RenderedPrompt:
        return await _call(self.handle.render, request)

    async def listing(self) -> dict[str, list[dict]]:
        return await _call(self.handle.listing)


class HandleModelBackend:
    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def run(self, spec: GenerationSpec | EditSpec) -> GenerationResult:
        return await _call(self.handle.run, spec)

    async def health(self) -> dict[str, Any]:
        return await _call(self.handle.health)


def gateway_service(
    config: AppConfig,
    templater: DeploymentHandle,
    models: dict[str, DeploymentHandle],
    metrics: ServiceMetrics | None = None,
) -> GatewayService:
    """The serving logic over handles: what the Gateway serves and the JobRunner runs."""
    return GatewayService(
        config,
        prompts=HandlePromptBackend(templater),
        models={name: HandleModelBackend(handle) for name, handle in models.items()},
        storage=build_storage(config),
        metrics=metrics,
    )
