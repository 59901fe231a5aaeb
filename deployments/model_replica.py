"""One model on one replica (text-to-image or edit), with dynamic batching.

The graph creates one deployment of this class per configured model, named after it;
the model's family decides what one pipeline call does. Requests queue in a BatchQueue:
one that finds the model idle starts at once, and those that arrive while a call runs
share the next call, up to the model's batch budget.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ray import serve

from serve_app import environment
from serve_app.config import JobsConfig, ModelConfig
from serve_app.jobs.progress import ProgressReporter
from serve_app.models.batch_queue import BatchQueue
from serve_app.models.engine import BatchResult, ModelEngine, ModelSpec
from serve_app.models.spec import GenerationResult
from serve_app.observability.ray_adapter import replica_metrics
from serve_app.ray_adapter import assigned_cpu_threads

logger = logging.getLogger("ray.serve")


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30)
class ModelReplica:
    def __init__(self, model: ModelConfig, tiny_cache: str, jobs: JobsConfig):
        self.metrics = replica_metrics()
        # Durable jobs in a batch get their step progress written to the job store.
        progress = ProgressReporter(environment.job_store_url(jobs.store_url))
        self.engine = ModelEngine(
            model,
            Path(tiny_cache),
            self.metrics,
            progress=progress,
            cpu_threads=assigned_cpu_threads(),
        )
        self.engine.warmup()
        self.queue: BatchQueue[ModelSpec, BatchResult] = BatchQueue(
            self._run_batch,
            self.engine.batch_cost,
            self.engine.batch_budget(),
            linger_s=model.batching.idle_wait_s,
            on_start=self._record_waits,
        )

    async def run(self, spec: ModelSpec) -> GenerationResult:
        result = await self.queue.submit(spec)
        # Encoding runs outside the batch, so the next pipeline call need not wait for it.
        images = await asyncio.to_thread(self.engine.encode, spec, result)
        return GenerationResult(images=images, batch_images=result.batch_images)

    async def _run_batch(self, specs: list[ModelSpec]) -> list[BatchResult | Exception]:
        # The pipeline call leaves the event loop so health checks and queueing go on.
        return await asyncio.to_thread(self.engine.run_batch, specs)

    def _record_waits(self, waits: list[float]) -> None:
        for wait in waits:
            self.metrics.queue_wait(self.engine.config.name, wait)

    def health(self) -> dict:
        return self.engine.health()

    def check_health(self) -> None:
        """Serve calls this every health_check_period_s: refresh the GPU gauges."""
        try:
            report = self.engine.gpu()
            if report is not None:
                self.metrics.gpu(self.engine.config.name, report)
        except Exception:  # a gauge is never a reason to restart a replica
            logger.exception("GPU metrics update failed")
