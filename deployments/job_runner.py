"""Runs durable jobs: claims them from the job store and calls the same model handles
as the sync API, so jobs share the models' batches. CPU only; scale it with its
`deployments:` entry like any other."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.config import AppConfig
from serve_app.jobs.delivery import WebhookDispatcher
from serve_app.jobs.execution import JobExecutor
from serve_app.jobs.runner import JobRunner as Runner
from serve_app.jobs.service import callback_policy, webhook_secrets
from serve_app.jobs.store import JobStore, job_store_url
from serve_app.jobs.webhooks import WebhookSender
from serve_app.observability.ray_adapter import replica_metrics
from serve_app.ray_adapter import gateway_service

logger = logging.getLogger(__name__)


@serve.deployment(num_replicas=1, max_ongoing_requests=4)
class JobRunner:
    async def __init__(
        self, config: AppConfig, templater: DeploymentHandle, models: dict[str, DeploymentHandle]
    ):
        store = JobStore(job_store_url(config.jobs))
        await asyncio.to_thread(store.create_schema)
        jobs = config.jobs
        secrets = webhook_secrets(config)
        webhooks = None
        if secrets:
            sender = WebhookSender(
                callback_policy(config), timeout_s=jobs.webhooks.timeout_s, max_response_bytes=65536
            )
            webhooks = WebhookDispatcher(
                store, sender, secrets, jobs.webhooks.retry_schedule_s, jobs.poll_interval_s
            )
        self.runner = Runner(
            store,
            JobExecutor(gateway_service(config, templater, models, metrics=replica_metrics())),
            jobs,
            worker_id=f"{socket.gethostname()}:{os.getpid()}",
            webhooks=webhooks,
        )
        self.task = asyncio.get_running_loop().create_task(self.runner.run())
        logger.info("job runner %s started", self.runner.worker_id)

    def check_health(self) -> None:
        if self.task.done():  # the loop never ends on its own; if it did, restart the replica
            raise RuntimeError("the job runner loop stopped")

    async def status(self) -> dict:
        return {"worker_id": self.runner.worker_id, "running": sorted(self.runner.running)}

    async def __del__(self):
        # A graceful stop (scale-down, redeploy) hands running jobs straight back.
        await self.runner.release()
        self.task.cancel()
