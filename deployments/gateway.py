"""The HTTP ingress: a FastAPI app (serve_app.api) around handles to the other deployments."""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_app.api.server import create_app
from serve_app.api.serving import GatewayService
from serve_app.config import AppConfig
from serve_app.errors import ServiceError, ServiceUnavailableError
from serve_app.models.spec import EditSpec, GenerationResult, GenerationSpec
from serve_app.prompts import PromptRequest, RenderedPrompt
from serve_app.security.guard import build_guard
from serve_app.security.loopback import check_anonymous_bind
from serve_app.storage import LocalStorage, UrlSigner
from serve_app.storage.signing import secret_from_environment

logger = logging.getLogger(__name__)


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


def proxy_host() -> str | None:
    """The host Serve's HTTP proxies bind (`http_options.host`)."""
    from ray.serve.context import _get_global_client

    return _get_global_client().http_config.host


@serve.deployment(max_ongoing_requests=100)
@serve.ingress()
class Gateway:
    def __init__(
        self, config: AppConfig, templater: DeploymentHandle, models: dict[str, DeploymentHandle]
    ):
        storage = LocalStorage(config.resolve_path(config.storage.root))
        secret = (
            (config.storage.signing_secret or "").encode()
            or secret_from_environment()
            or storage.signing_secret()
        )
        self.service = GatewayService(
            config,
            prompts=HandlePromptBackend(templater),
            models={name: HandleModelBackend(handle) for name, handle in models.items()},
            storage=storage,
            signer=UrlSigner(secret, config.storage.url_ttl_s),
        )
        if not config.auth.enabled:
            # The bind host lives in the Serve config, not in our args: ask the controller.
            host = proxy_host()
            check_anonymous_bind(host)
            logger.warning(
                "API keys are OFF (auth.enabled: false): anonymous requests are served on "
                "loopback only; the HTTP proxy binds %s",
                host,
            )
        self.guard = build_guard(config)
        logger.info(
            "API keys %s; rate limits %s",
            "on" if config.auth.enabled else "off",
            ("shared via Redis" if config.rate_limits.redis_url else "in this replica only")
            if config.rate_limits.enabled
            else "off",
        )

    def __serve_build_asgi_app__(self):
        return create_app(self.service, self.guard, replica_counts=self.replica_counts)

    async def replica_counts(self) -> dict[str, Any]:
        """Running replicas per deployment, as the Serve controller reports them."""
        try:
            status = serve.status()
        except Exception:  # the controller being busy must not fail a health check
            return {}
        counts = {}
        for app in status.applications.values():
            for name, deployment in app.deployments.items():
                counts[name] = {
                    "status": str(deployment.status.value),
                    "replicas": dict(deployment.replica_states),
                }
        return counts
