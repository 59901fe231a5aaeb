"""The HTTP ingress: the FastAPI app of serve_app.api around handles to the other deployments."""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api.app import create_app, gateway_parts
from serve_app.config import AppConfig
from serve_app.observability.ray_adapter import (
    SERVE_EXTRA_FIELDS_KEY,
    replica_metrics,
    route_app_logs,
    serve_logger,
)
from serve_app.ray_adapter import backends, deployment_replicas, proxy_host
from serve_app.security.loopback import check_anonymous_bind

logger = logging.getLogger(__name__)


@serve.deployment(max_ongoing_requests=100)
@serve.ingress()
class Gateway:
    async def __init__(
        self,
        config: AppConfig,
        templater: DeploymentHandle,
        models: dict[str, DeploymentHandle],
        job_runner: DeploymentHandle,
    ):
        route_app_logs()
        # The Gateway does not call the JobRunner; holding its handle makes Serve deploy it.
        self.job_runner = job_runner
        if not config.auth.enabled:
            # The bind host lives in the Serve config, not in our args: ask the controller.
            host = proxy_host()
            check_anonymous_bind(host)
            logger.warning(
                "API keys are OFF (auth.enabled: false): anonymous requests are served on "
                "loopback only; the HTTP proxy binds %s",
                host,
            )
        prompts, model_backends = backends(templater, models, config.gateway.overload_wait_s)
        self.parts = await asyncio.to_thread(
            gateway_parts,
            config,
            prompts,
            model_backends,
            metrics=replica_metrics(),
            access_logger=serve_logger(),
            access_log_extra_key=SERVE_EXTRA_FIELDS_KEY,
            deployment_replicas=deployment_replicas,
        )

    def __serve_build_asgi_app__(self):
        return create_app(self.parts)
