"""The HTTP ingress: a FastAPI app (serve_app.api) around handles to the other deployments."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api.server import create_app
from serve_app.config import AppConfig
from serve_app.jobs.service import JobService
from serve_app.jobs.store import JobStore, job_store_url
from serve_app.observability.access_log import AccessLog
from serve_app.observability.ray_adapter import (
    SERVE_EXTRA_FIELDS_KEY,
    replica_metrics,
    serve_logger,
)
from serve_app.ray_adapter import gateway_service
from serve_app.security.guard import build_guard
from serve_app.security.loopback import check_anonymous_bind

logger = logging.getLogger(__name__)


def proxy_host() -> str | None:
    """The host Serve's HTTP proxies bind (`http_options.host`)."""
    from ray.serve.context import _get_global_client

    return _get_global_client().http_config.host


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
        # The Gateway does not call the JobRunner; holding its handle makes Serve deploy it.
        self.job_runner = job_runner
        self.service = gateway_service(config, templater, models, metrics=replica_metrics())
        store = JobStore(job_store_url(config.jobs))
        await asyncio.to_thread(store.create_schema)
        self.jobs = JobService(self.service, store)
        observability = config.observability
        self.access_log = (
            AccessLog(
                serve_logger(),
                extra_key=SERVE_EXTRA_FIELDS_KEY,
                prompt_chars=observability.access_log_prompt_chars,
            )
            if observability.access_log
            else None
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
        return create_app(
            self.service,
            self.guard,
            replica_counts=self.replica_counts,
            jobs=self.jobs,
            access_log=self.access_log,
        )

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
