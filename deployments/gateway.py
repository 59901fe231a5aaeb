"""The HTTP ingress: a FastAPI app (serve_app.api) around handles to the other deployments."""

from __future__ import annotations

import asyncio
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

    def __serve_build_asgi_app__(self):
        return create_app(
            self.service,
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
