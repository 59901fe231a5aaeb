"""One vision-chat model on one replica: batched `generate`, whole or streamed answers.

The graph creates one deployment of this class per vision-chat model, named after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from ray import serve

from serve_app.config import ModelConfig
from serve_app.models.chat_engine import ChatEngine
from serve_app.models.chat_replica import ChatReplica
from serve_app.models.chat_spec import ChatDeltas, ChatResult, ChatSpec
from serve_app.observability.ray_adapter import replica_metrics, route_app_logs
from serve_app.ray_adapter import assigned_cpu_threads


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30)
class VisionChat:
    def __init__(self, model: ModelConfig, tiny_cache: str):
        route_app_logs()
        engine = ChatEngine(
            model, Path(tiny_cache), replica_metrics(), cpu_threads=assigned_cpu_threads()
        )
        engine.warmup()
        self.replica = ChatReplica(engine, linger_s=model.batching.idle_wait_s)

    async def run(self, spec: ChatSpec) -> ChatResult:
        return await self.replica.run(spec)

    async def stream(self, spec: ChatSpec) -> AsyncIterator[ChatDeltas | ChatResult]:
        async for item in self.replica.stream(spec):
            yield item

    def health(self) -> dict:
        return self.replica.engine.health()
