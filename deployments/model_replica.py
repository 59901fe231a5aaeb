"""One model on one replica (text-to-image or edit), with dynamic batching.

The graph creates one deployment of this class per configured model, named after it;
the model's family decides what one pipeline call does. Requests queue in a BatchQueue:
one that finds the model idle starts at once, and those that arrive while a call runs
share the next call, up to the model's batch budget.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from ray import serve

from serve_app import environment
from serve_app.config import JobsConfig, ModelConfig
from serve_app.jobs.progress import ProgressReporter
from serve_app.models.engine import ModelEngine, ModelSpec
from serve_app.models.image_replica import ImageReplica
from serve_app.models.spec import GenerationResult, PartialImage, StreamAccepted
from serve_app.observability.ray_adapter import replica_metrics, route_app_logs
from serve_app.ray_adapter import assigned_cpu_threads

logger = logging.getLogger("ray.serve")


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30)
class ModelReplica:
    def __init__(self, model: ModelConfig, tiny_cache: str, jobs: JobsConfig):
        route_app_logs()
        # Durable jobs in a batch get their steps and previews written to the job store,
        # and stop when the store says they were canceled.
        progress = ProgressReporter(environment.job_store_url(jobs.store_url))
        engine = ModelEngine(
            model,
            Path(tiny_cache),
            replica_metrics(),
            progress=progress,
            cpu_threads=assigned_cpu_threads(),
        )
        engine.warmup()
        self.replica = ImageReplica(
            engine, linger_s=model.batching.idle_wait_s, job_previews=progress.preview
        )
        self._hold_adapter_set = None
        if engine.adapters is not None:
            # Tells Serve's routers which LoRA sets this replica holds, so requests for
            # a set come here (the Gateway names the set as the multiplexed model id).
            # The adapters' weights are the engine's to load and free.
            async def adapter_set(set_id: str) -> str:
                return set_id

            limit = model.adapters_held
            self._hold_adapter_set = serve.multiplexed(max_num_models_per_replica=limit)(
                adapter_set
            )

    async def run(self, spec: ModelSpec) -> GenerationResult:
        await self._note_adapter_set()
        return await self.replica.run(spec)

    async def stream(
        self, spec: ModelSpec
    ) -> AsyncIterator[StreamAccepted | PartialImage | GenerationResult]:
        await self._note_adapter_set()
        async for item in self.replica.stream(spec):
            yield item

    async def _note_adapter_set(self) -> None:
        set_id = serve.get_multiplexed_model_id()
        if set_id and self._hold_adapter_set is not None:
            await self._hold_adapter_set(set_id)

    def health(self) -> dict:
        return self.replica.engine.health()

    def check_health(self) -> None:
        """Serve calls this every health_check_period_s: refresh the GPU gauges."""
        engine = self.replica.engine
        try:
            report = engine.gpu()
            if report is not None:
                engine.metrics.gpu(engine.config.name, report)
        except Exception:  # a gauge is never a reason to restart a replica
            logger.exception("GPU metrics update failed")
