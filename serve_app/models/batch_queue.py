"""A replica's batch queue: no wait when idle, full batches when busy.

Ray Serve's `@serve.batch` forms a batch by waiting `batch_wait_timeout_s` after the first
arrival, whether or not the model is busy, and keeps forming batches while one runs. A
lone request therefore always waits out the timeout, and at load the arrivals during one
pipeline call are cut into several small batches by that timer. This queue does what a
GPU wants instead:

- a request that finds the model idle starts at once (or after `linger_s`, if set);
- while a call runs, arrivals wait; when it ends, the next call takes everything that
  waited that fits the budget, oldest first, in one call.

A call holds requests that share one key (what one pipeline call must share: size,
steps, ...), led by the oldest waiting request, so no request waits behind a stream of
others. The budget caps both images and work (pixels x steps); a request heavier than
the whole budget still runs, alone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchBudget:
    """What one pipeline call may hold."""

    max_images: int
    max_work: float

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {self.max_images}")
        if self.max_work <= 0:
            raise ValueError(f"max_work must be positive, got {self.max_work}")


@dataclass(frozen=True)
class BatchCost:
    """What one request weighs against the budget, and what it must share a call with."""

    images: int
    work: float
    # Requests share a call only with equal keys; None: never shares a call.
    key: Hashable | None


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    cost: BatchCost
    future: asyncio.Future[Result]
    enqueued_at: float = field(default_factory=time.monotonic)


class BatchQueue(Generic[Item, Result]):
    """Submit items one by one; `run` is called with lists of them, one call at a time.

    `run` returns one result per item, in order; an Exception in that list is raised to
    that item's caller alone. If `run` itself raises, every caller of that call gets it.
    """

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result | Exception]]],
        cost: Callable[[Item], BatchCost],
        budget: BatchBudget,
        linger_s: float = 0.0,
        on_start: Callable[[list[float]], None] | None = None,
    ):
        if linger_s < 0:
            raise ValueError(f"linger_s must be >= 0, got {linger_s}")
        self._run = run
        self._cost = cost
        self.budget = budget
        self.linger_s = linger_s
        # Told how long each request of a call waited, as the call starts.
        self._on_start = on_start
        self._waiting: deque[_Waiting[Item, Result]] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self.calls = 0

    def __len__(self) -> int:
        return len(self._waiting)

    async def submit(self, item: Item) -> Result:
        """Queue `item` and wait for its result. Cancelling the caller drops the item if
        its call has not started; a call that started runs to its end."""
        loop = asyncio.get_running_loop()
        entry: _Waiting[Item, Result] = _Waiting(item, self._cost(item), loop.create_future())
        self._waiting.append(entry)
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._serve_forever(), name="batch-queue")
        result = await entry.future
        if isinstance(result, Exception):
            raise result
        return result

    async def _serve_forever(self) -> None:
        while True:
            await self._wait_for_work()
            batch = self.take()
            if not batch:
                continue
            await self._call(batch)

    async def _wait_for_work(self) -> None:
        while not self._live_waiting():
            self._arrived.clear()
            await self._arrived.wait()
        if self.linger_s > 0:
            # The model is idle here: give company a moment to arrive, unless the budget
            # is already full.
            deadline = self._waiting[0].enqueued_at + self.linger_s
            while not self._budget_full() and (left := deadline - time.monotonic()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break

    def _live_waiting(self) -> bool:
        while self._waiting and self._waiting[0].future.done():
            self._waiting.popleft()  # its caller went away before its call started
        return bool(self._waiting)

    def _select(self) -> tuple[list[_Waiting[Item, Result]], bool]:
        """The next call as it stands (the oldest live request, then every later one with
        its key that still fits the budget, in arrival order), and whether it is full:
        no waiting request could join it now or later."""
        head = self._waiting[0]
        batch = [head]
        if head.cost.key is None:
            return batch, True
        images, work = head.cost.images, head.cost.work
        full = False
        for entry in islice(self._waiting, 1, None):
            if entry.future.done() or entry.cost.key != head.cost.key:
                continue  # a caller that went away, or another shape
            if (
                images + entry.cost.images <= self.budget.max_images
                and work + entry.cost.work <= self.budget.max_work
            ):
                batch.append(entry)
                images, work = images + entry.cost.images, work + entry.cost.work
            else:
                full = True
        full = full or images >= self.budget.max_images or work >= self.budget.max_work
        return batch, full

    def _budget_full(self) -> bool:
        return self._select()[1]

    def take(self) -> list[_Waiting[Item, Result]]:
        """The next call (see _select); its entries, and callers that went away, leave
        the queue."""
        if not self._live_waiting():
            return []
        batch, _ = self._select()
        taken = {id(entry) for entry in batch}
        self._waiting = deque(
            entry for entry in self._waiting if id(entry) not in taken and not entry.future.done()
        )
        return batch

    async def _call(self, batch: list[_Waiting[Item, Result]]) -> None:
        started = time.monotonic()
        items = [entry.item for entry in batch]
        self.calls += 1
        if self._on_start is not None:
            self._on_start([started - entry.enqueued_at for entry in batch])
        try:
            results = await self._run(items)
            if len(results) != len(batch):
                raise RuntimeError(f"the batch gave {len(results)} results for {len(batch)}")
        except Exception as error:
            results = [error] * len(batch)
        except BaseException:
            # The queue itself is being torn down: no caller of this call may wait forever.
            for entry in batch:
                entry.future.cancel()
            raise
        for entry, result in zip(batch, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)
