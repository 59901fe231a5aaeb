"""The replica's batch queue: idle requests start at once, arrivals during a call share the
next one, budgets in images and work, keys, failures and callers that go away.

The fake `run` below blocks on an asyncio.Event, so every test decides exactly what is
waiting when a call starts: nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from serve_app.models.batch_queue import BatchBudget, BatchCost, BatchQueue


@dataclass(frozen=True)
class Job:
    name: str
    images: int = 1
    work: float = 1.0
    key: str | None = "64x64"
    fails: bool = False


def cost(job: Job) -> BatchCost:
    return BatchCost(job.images, job.work, job.key)


class GatedModel:
    """Records each call's items; a call ends only when the test opens the gate."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, jobs: list[Job]) -> list[str | Exception]:
        self.calls.append([job.name for job in jobs])
        self.started.set()
        await self.gate.wait()
        self.gate.clear()
        return [ValueError(job.name) if job.fails else f"done {job.name}" for job in jobs]

    async def finish_call(self) -> None:
        """Let the running call end, then wait until the next call (if any) starts."""
        self.started.clear()
        self.gate.set()
        await asyncio.sleep(0)


def queue_for(model: GatedModel, images: int = 8, work: float = 8, **options) -> BatchQueue:
    return BatchQueue(model.run, cost, BatchBudget(images, work), **options)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_that_finds_the_model_idle_starts_at_once():
    model = GatedModel()
    queue = queue_for(model)
    task = asyncio.create_task(queue.submit(Job("a")))
    await asyncio.wait_for(model.started.wait(), 5)  # no wait for company
    assert model.calls == [["a"]]
    await model.finish_call()
    assert await task == "done a"


async def test_arrivals_during_a_call_share_the_next_call():
    model = GatedModel()
    queue = queue_for(model)
    first = asyncio.create_task(queue.submit(Job("a")))
    await model.started.wait()
    rest = [asyncio.create_task(queue.submit(Job(name))) for name in "bcdefg"]
    await settle()
    assert len(queue) == 6 and model.calls == [["a"]]
    await model.finish_call()
    await asyncio.wait_for(model.started.wait(), 5)
    assert model.calls == [["a"], list("bcdefg")]
    await model.finish_call()
    assert await first == "done a"
    assert await asyncio.gather(*rest) == [f"done {name}" for name in "bcdefg"]
    assert queue.calls == 2


async def test_the_image_budget_splits_a_long_queue_in_arrival_order():
    model = GatedModel()
    queue = queue_for(model, images=4, work=100)
    tasks = [asyncio.create_task(queue.submit(Job("a")))]
    await model.started.wait()
    tasks += [asyncio.create_task(queue.submit(Job(name, images=2))) for name in "bcd"]
    await settle()
    for _ in range(3):
        await model.finish_call()
        await settle()
    assert model.calls == [["a"], ["b", "c"], ["d"]]
    assert all(await asyncio.gather(*tasks))


async def test_the_work_budget_counts_pixels_and_steps():
    # Budget: four default images of work. A 2x-side image weighs 4; four 1x images fill it too.
    model = GatedModel()
    queue = queue_for(model, images=8, work=4)
    tasks = [asyncio.create_task(queue.submit(Job("busy")))]
    await model.started.wait()
    tasks.append(asyncio.create_task(queue.submit(Job("big", work=4.0))))
    tasks += [asyncio.create_task(queue.submit(Job(f"small{i}", work=1.0))) for i in range(5)]
    await settle()
    for _ in range(4):
        await model.finish_call()
        await settle()
    assert model.calls == [
        ["busy"],
        ["big"],
        ["small0", "small1", "small2", "small3"],
        ["small4"],
    ]
    await asyncio.gather(*tasks)


async def test_a_request_heavier_than_the_budget_runs_alone():
    model = GatedModel()
    queue = queue_for(model, images=2, work=2)
    task = asyncio.create_task(queue.submit(Job("huge", images=4, work=16)))
    await model.started.wait()
    await model.finish_call()
    assert await task == "done huge" and model.calls == [["huge"]]


async def test_a_call_holds_one_key_led_by_the_oldest_request():
    model = GatedModel()
    queue = queue_for(model)
    tasks = [asyncio.create_task(queue.submit(Job("busy")))]
    await model.started.wait()
    for name, key in [("p1", "512"), ("q1", "1024"), ("p2", "512"), ("q2", "1024")]:
        tasks.append(asyncio.create_task(queue.submit(Job(name, key=key))))
    await settle()
    for _ in range(3):
        await model.finish_call()
        await settle()
    assert model.calls == [["busy"], ["p1", "p2"], ["q1", "q2"]]
    await asyncio.gather(*tasks)


async def test_requests_without_a_key_never_share_a_call():
    model = GatedModel()
    queue = queue_for(model)
    tasks = [asyncio.create_task(queue.submit(Job("busy", key=None)))]
    await model.started.wait()
    tasks += [asyncio.create_task(queue.submit(Job(n, key=None))) for n in ("x", "y")]
    await settle()
    for _ in range(3):
        await model.finish_call()
        await settle()
    assert model.calls == [["busy"], ["x"], ["y"]]
    await asyncio.gather(*tasks)


async def test_a_failed_item_fails_its_caller_alone():
    model = GatedModel()
    queue = queue_for(model)
    busy = asyncio.create_task(queue.submit(Job("busy")))
    await model.started.wait()
    good = asyncio.create_task(queue.submit(Job("good")))
    bad = asyncio.create_task(queue.submit(Job("bad", fails=True)))
    await settle()
    await model.finish_call()
    await settle()
    await model.finish_call()
    assert await good == "done good"
    with pytest.raises(ValueError, match="bad"):
        await bad
    assert await busy == "done busy"


async def test_a_call_that_raises_fails_all_its_callers_and_the_queue_goes_on():
    calls = []

    async def run(jobs: list[Job]) -> list[str]:
        calls.append([job.name for job in jobs])
        if any(job.fails for job in jobs):
            raise RuntimeError("pipeline broke")
        return [job.name for job in jobs]

    queue = BatchQueue(run, cost, BatchBudget(8, 8))
    with pytest.raises(RuntimeError, match="pipeline broke"):
        await queue.submit(Job("a", fails=True))
    assert await queue.submit(Job("b")) == "b"


async def test_a_torn_down_call_leaves_no_caller_waiting_and_the_queue_restarts():
    async def run(jobs: list[Job]) -> list[str]:
        if any(job.fails for job in jobs):
            raise asyncio.CancelledError  # as when the replica's loop tears the worker down
        return [job.name for job in jobs]

    queue = BatchQueue(run, cost, BatchBudget(8, 8))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(queue.submit(Job("a", fails=True)), 5)
    assert await asyncio.wait_for(queue.submit(Job("b")), 5) == "b"


async def test_a_result_list_of_the_wrong_length_fails_the_call():
    async def run(jobs: list[Job]) -> list[str]:
        return []

    queue = BatchQueue(run, cost, BatchBudget(8, 8))
    with pytest.raises(RuntimeError, match="0 results for 1"):
        await queue.submit(Job("a"))


async def test_a_caller_that_goes_away_before_its_call_is_dropped():
    model = GatedModel()
    queue = queue_for(model)
    busy = asyncio.create_task(queue.submit(Job("busy")))
    await model.started.wait()
    gone = asyncio.create_task(queue.submit(Job("gone")))
    stays = asyncio.create_task(queue.submit(Job("stays")))
    await settle()
    gone.cancel()
    await settle()
    await model.finish_call()
    await settle()
    await model.finish_call()
    assert await stays == "done stays" and await busy == "done busy"
    assert model.calls == [["busy"], ["stays"]]


async def test_an_idle_wait_ends_as_soon_as_the_budget_is_full():
    # linger_s is an upper bound: a full budget starts the call without waiting it out.
    model = GatedModel()
    queue = queue_for(model, images=2, work=8, linger_s=60)
    tasks = [asyncio.create_task(queue.submit(Job(name))) for name in "ab"]
    await asyncio.wait_for(model.started.wait(), 5)
    assert model.calls == [["a", "b"]]
    await model.finish_call()
    await asyncio.gather(*tasks)


async def test_a_request_that_can_share_no_call_never_waits_for_company():
    model = GatedModel()
    queue = queue_for(model, linger_s=60)
    task = asyncio.create_task(queue.submit(Job("alone", key=None)))
    await asyncio.wait_for(model.started.wait(), 5)
    assert model.calls == [["alone"]]
    await model.finish_call()
    assert await task == "done alone"


async def test_an_idle_wait_gathers_company_for_the_first_call():
    model = GatedModel()
    queue = queue_for(model, linger_s=0.2)
    first = asyncio.create_task(queue.submit(Job("a")))
    await settle()
    assert model.calls == []  # still waiting for company
    second = asyncio.create_task(queue.submit(Job("b")))
    await asyncio.wait_for(model.started.wait(), 5)
    assert model.calls == [["a", "b"]]
    await model.finish_call()
    await asyncio.gather(first, second)


def test_budgets_and_waits_are_checked():
    with pytest.raises(ValueError, match="max_images"):
        BatchBudget(0, 1)
    with pytest.raises(ValueError, match="max_work"):
        BatchBudget(1, 0)
    with pytest.raises(ValueError, match="linger_s"):
        BatchQueue(GatedModel().run, cost, BatchBudget(1, 1), linger_s=-1)
