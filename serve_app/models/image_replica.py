"""An image model replica's request handling, without Ray: the batch queue in front of
the engine, whole answers and streamed ones (previews first), and callers that go away.

A request that finds the model idle starts at once; those that arrive during a pipeline
call share the next one. A caller that leaves (a closed stream, a cancelled call, a
canceled job) marks its request abandoned: a call whose requests have all gone stops at
its next denoising step, and the next call starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from serve_app.models.batch_queue import BatchQueue
from serve_app.models.engine import BatchResult, ImageTask, ModelEngine, ModelSpec
from serve_app.models.spec import GenerationResult, PartialImage, StreamAccepted


class ImageReplica:
    def __init__(
        self,
        engine: ModelEngine,
        linger_s: float = 0.0,
        job_previews: Callable[[str, PartialImage], None] | None = None,
    ):
        self.engine = engine
        # Where the previews of a durable job go (its event stream), if anywhere.
        self.job_previews = job_previews
        self.queue: BatchQueue[ImageTask, BatchResult] = BatchQueue(
            self._run_batch,
            lambda task: engine.batch_cost(task.spec),
            engine.batch_budget(),
            linger_s=linger_s,
            on_start=self._record_waits,
        )

    async def run(self, spec: ModelSpec) -> GenerationResult:
        task = ImageTask(spec, on_partial=self._job_preview_sink(spec))
        try:
            result = await self.queue.submit(task)
        except asyncio.CancelledError:
            self.engine.abandon(task)
            raise
        return await self._encode(spec, result)

    async def stream(
        self, spec: ModelSpec
    ) -> AsyncIterator[StreamAccepted | PartialImage | GenerationResult]:
        """StreamAccepted once queued, the request's previews as they come, then its
        whole result."""
        loop = asyncio.get_running_loop()
        partials: asyncio.Queue[PartialImage] = asyncio.Queue()

        def on_partial(partial: PartialImage) -> None:  # called on the preview thread
            loop.call_soon_threadsafe(partials.put_nowait, partial)

        task = ImageTask(spec, on_partial=on_partial)
        answer = asyncio.ensure_future(self.queue.submit(task))
        try:
            yield StreamAccepted()
            while True:
                getter = asyncio.ensure_future(partials.get())
                await asyncio.wait({getter, answer}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not partials.empty():
                    yield partials.get_nowait()
                yield await self._encode(spec, answer.result())
                return
        finally:
            if not answer.done():
                self.engine.abandon(task)
                answer.cancel()

    async def health(self) -> dict:
        return self.engine.health()

    def _job_preview_sink(self, spec: ModelSpec) -> Callable[[PartialImage], None] | None:
        if spec.job_id is None or not spec.partial_images or self.job_previews is None:
            return None
        job_id, sink = spec.job_id, self.job_previews
        return lambda partial: sink(job_id, partial)

    async def _encode(self, spec: ModelSpec, result: BatchResult) -> GenerationResult:
        # Encoding runs outside the batch, so the next pipeline call need not wait for it.
        images = await asyncio.to_thread(self.engine.encode, spec, result)
        return GenerationResult(images=images, batch_images=result.batch_images)

    async def _run_batch(self, tasks: list[ImageTask]) -> list[BatchResult | Exception]:
        # The pipeline call leaves the event loop so health checks and queueing go on.
        return await asyncio.to_thread(self.engine.run_batch, tasks)

    def _record_waits(self, waits: list[float]) -> None:
        for wait in waits:
            self.engine.metrics.queue_wait(self.engine.config.name, wait)
