"""A vision-chat replica's request handling, without Ray: the batch queue in front of the
engine, whole answers and streamed ones, and callers that go away.

A request that finds the model idle starts at once; those that arrive during a generate
call share the next one. A caller that leaves (a closed stream, a cancelled call) marks
its rows cancelled: the decoder ends them at the next token, and a call whose rows are
all gone stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from serve_app.models.batch_queue import BatchQueue
from serve_app.models.chat_engine import ChatEngine, ChatTask
from serve_app.models.chat_spec import ChatDelta, ChatDeltas, ChatResult, ChatSpec


class ChatReplica:
    def __init__(self, engine: ChatEngine, linger_s: float = 0.0):
        self.engine = engine
        self.queue: BatchQueue[ChatTask, ChatResult] = BatchQueue(
            self._run_batch,
            engine.batch_cost,
            engine.batch_budget(),
            linger_s=linger_s,
            on_start=self._record_waits,
        )

    async def run(self, spec: ChatSpec) -> ChatResult:
        task = ChatTask(spec)
        try:
            return await self.queue.submit(task)
        finally:
            task.cancelled.set()  # a no-op once answered; stops the rows if the caller left

    async def stream(self, spec: ChatSpec) -> AsyncIterator[ChatDeltas | ChatResult]:
        """The deltas of each step as they come, then the whole result."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[list[ChatDelta]] = asyncio.Queue()

        def on_deltas(batch: list[ChatDelta]) -> None:  # called on the generate thread
            loop.call_soon_threadsafe(deltas.put_nowait, batch)

        task = ChatTask(spec, on_deltas=on_deltas)
        answer = asyncio.ensure_future(self.queue.submit(task))
        try:
            while True:
                getter = asyncio.ensure_future(deltas.get())
                await asyncio.wait({getter, answer}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    # Every step waiting now goes as one item: when tokens come faster
                    # than a stream ships them, the stream carries fewer, larger items.
                    batch = getter.result()
                    while not deltas.empty():
                        batch = batch + deltas.get_nowait()
                    yield ChatDeltas(batch)
                    continue
                getter.cancel()
                while not deltas.empty():
                    yield ChatDeltas(deltas.get_nowait())
                yield answer.result()
                return
        finally:
            task.cancelled.set()
            if not answer.done():
                answer.cancel()

    async def _run_batch(self, tasks: list[ChatTask]) -> list[ChatResult | Exception]:
        # generate leaves the event loop so health checks and queueing go on.
        return await asyncio.to_thread(self.engine.run_batch, tasks)

    def _record_waits(self, waits: list[float]) -> None:
        for wait in waits:
            self.engine.metrics.queue_wait(self.engine.config.name, wait)
