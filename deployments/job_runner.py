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
from serve_app.observability.ray_adapter import replica_metrics, route_app_logs
from serve_app.ray_adapter import backends
from serve_app.service.chat import ChatService
from serve_app.service.images import open_image_service
from serve_app.service.job_execution import open_job_runner

logger = logging.getLogger(__name__)


@serve.deployment(num_replicas=1, max_ongoing_requests=4)
class JobRunner:
    async def __init__(
        self, config: AppConfig, templater: DeploymentHandle, models: dict[str, DeploymentHandle]
    ):
        route_app_logs()
        prompts, model_backends = backends(templater, models)
        images = open_image_service(config, prompts, model_backends, replica_metrics())
        chat = ChatService(config, model_backends, images.image_inputs)  # type: ignore[arg-type]
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.runner = await asyncio.to_thread(open_job_runner, config, images, worker_id, chat)
        self.task = asyncio.get_running_loop().create_task(self.runner.run())
        logger.info("job runner %s started", worker_id)

    def check_health(self) -> None:
        if self.task.done():  # the loop never ends on its own; if it did, restart the replica
            raise RuntimeError("the job runner loop stopped")

    async def status(self) -> dict:
        return {"worker_id": self.runner.worker_id, "running": sorted(self.runner.running)}

    async def __del__(self):
        # A graceful stop (scale-down, redeploy) hands running jobs straight back.
        await self.runner.release()
        self.task.cancel()
