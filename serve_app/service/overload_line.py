"""The Gateway's overload line: requests a model refused for capacity (its queue is full)
wait here, first come first served, and are sent again as the model frees room, instead
of a 503 at once. Past `wait_s` the refusal stands (503 `model_overloaded`, Retry-After).

Why: a caller whose request finishes sends its next one into the slot it just freed, so
under sustained overload a refused caller gets in only by luck, and the OpenAI SDK's two
retries a second apart lose requests. Here a freed slot goes to the longest waiter, and a
newcomer queues behind the waiters instead of taking the slot they wait for.

A request is sent by a function that returns once the model took it (Serve assigned it
to a replica), or raises the refusal, and gives the awaitable of its answer; only the head
of the line sends, so the line keeps its order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from serve_app.errors import ErrorCode, ServiceError, ServiceUnavailableError

T = TypeVar("T")

# A head refused waits for one of this line's calls to end (a slot freed), or this long
# (a slot freed by another Gateway's call), before it asks again.
RETRY_S = 0.25

# How many at the head of the line send at once: enough to refill a batch's worth of
# slots the moment a model frees them (each send waits for Serve to assign its call).
SENDERS = 8

# Sends a request: returns once the model took it, with the awaitable of its answer.
Send = Callable[[], Awaitable[Awaitable[T]]]


def is_refusal(error: BaseException | None) -> bool:
    """A model's refusal for capacity: nothing ran, so sending it again is safe."""
    return isinstance(error, ServiceError) and error.code == ErrorCode.MODEL_OVERLOADED


class OverloadLine:
    """One per model backend in a Gateway; `wait_s` 0 turns it off (refusals stand)."""

    def __init__(self, wait_s: float, senders: int = SENDERS, retry_s: float = RETRY_S):
        if wait_s < 0:
            raise ValueError(f"wait_s={wait_s}: give seconds >= 0 (0 turns the line off)")
        self.wait_s = wait_s
        self.retry_s = retry_s
        if senders < 1:
            raise ValueError(f"senders={senders}: give 1 or more")
        # asyncio's semaphore wakes its waiters in order.
        self._heads = asyncio.Semaphore(senders)
        self._napping: deque[asyncio.Future[None]] = deque()
        self.waiting = 0

    async def send(self, send: Send[T]) -> T:
        """The request's answer, or what it raised, or the refusal once the wait is over.
        Cancelling (the caller went away) leaves the line and cancels the request."""
        if self.wait_s <= 0:
            return await (await send())
        deadline = time.monotonic() + self.wait_s
        # Nobody waiting: straight to the model. Otherwise behind those who wait.
        in_line = self.waiting > 0
        while True:
            try:
                answer = await (self._admitted(send, deadline) if in_line else send())
                try:
                    return await answer
                finally:
                    self._wake_one()  # its slot is free
            except ServiceError as error:
                # A refusal may come with the answer too (the model's queue filled meanwhile).
                if not is_refusal(error) or time.monotonic() >= deadline:
                    raise
            in_line = True

    async def _admitted(self, send: Send[T], deadline: float) -> Awaitable[T]:
        """Wait to be the head of the line, then send until the model takes the request."""
        self.waiting += 1
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                async with self._heads:
                    while True:
                        try:
                            return await send()
                        except ServiceError as error:
                            if not is_refusal(error):
                                raise
                        await self._nap()
        except TimeoutError:
            raise ServiceUnavailableError(
                f"the model is at capacity and stayed so for {self.wait_s:g} s; retry shortly",
                code=ErrorCode.MODEL_OVERLOADED,
            ) from None
        finally:
            self.waiting -= 1

    async def _nap(self) -> None:
        """Until a call of this line ends (`_wake_one`), at most retry_s."""
        woken = asyncio.get_running_loop().create_future()
        self._napping.append(woken)
        try:
            await asyncio.wait_for(woken, self.retry_s)
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._napping.remove(woken)

    def _wake_one(self) -> None:
        while self._napping:
            woken = self._napping.popleft()
            if not woken.done():
                woken.set_result(None)
                return
