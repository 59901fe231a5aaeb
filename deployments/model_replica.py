"""One model on one replica (text-to-image or edit), with dynamic batching counted in images.

The graph creates one deployment of this class per configured model, named after it;
the model's family decides what one pipeline call does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ray import serve

from serve_app import environment
from serve_app.config import JobsConfig, ModelConfig
from serve_app.jobs.progress import ProgressReporter
from serve_app.models.engine import BatchResult, ModelEngine, ModelSpec
from serve_app.models.spec import GenerationResult
from serve_app.observability.ray_adapter import replica_metrics

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class QueuedSpec:
    """A request and when it joined the batch queue, for the queue-wait metric."""

    spec: ModelSpec
    enqueued_at: float


def count_images(items: list[QueuedSpec]) -> int:
    return sum(item.spec.n for item in items)


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30)
class ModelReplica:
    def __init__(self, model: ModelConfig, tiny_cache: str, jobs: JobsConfig):
        self.metrics = replica_metrics()
        # Durable jobs in a batch get their step progress written to the job store.
        progress = ProgressReporter(environment.job_store_url(jobs.store_url))
        self.engine = ModelEngine(model, Path(tiny_cache), self.metrics, progress=progress)
        self.engine.warmup()
        self._run_batch.set_max_batch_size(model.batching.max_batch_size)
        self._run_batch.set_batch_wait_timeout_s(model.batching.batch_wait_timeout_s)

    async def run(self, spec: ModelSpec) -> GenerationResult:
        result = await self._run_batch(QueuedSpec(spec, time.monotonic()))
        if isinstance(result, Exception):
            raise result
        # Encoding runs outside the batch, so the next pipeline call need not wait for it.
        images = await asyncio.to_thread(self.engine.encode, spec, result)
        return GenerationResult(images=images, batch_images=result.batch_images)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05, batch_size_fn=count_images)
    async def _run_batch(self, items: list[QueuedSpec]) -> list[BatchResult | Exception]:
        started = time.monotonic()
        for item in items:
            self.metrics.queue_wait(self.engine.config.name, started - item.enqueued_at)
        # The pipeline call leaves the event loop so health checks and queueing go on.
        return await asyncio.to_thread(self.engine.run_batch, [item.spec for item in items])

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
