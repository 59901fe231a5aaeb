"""The JobRunner's attempt accounting, over a real job store: which failures spend one of a
job's attempts. The executor stands in for the model replicas (the integration tests kill
real ones)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve_app.config import JobsConfig
from serve_app.errors import ErrorCode, InvalidRequestError, ServiceUnavailableError
from serve_app.jobs.records import JobRecord
from serve_app.jobs.runner import JobRunner
from serve_app.jobs.store import JobStore
from tests.unit import test_job_store
from tests.unit.test_job_store import Clock, make_jobs


class FailingExecutor:
    """Raises the given errors in turn, then succeeds."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    async def execute(self, job: JobRecord) -> dict[str, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"images": []}

    def discard(self, result: dict[str, Any]) -> None:
        pass


def replica_lost() -> ServiceUnavailableError:
    return ServiceUnavailableError("a replica was lost", code=ErrorCode.REPLICA_UNAVAILABLE)


def storage_down() -> ServiceUnavailableError:
    return ServiceUnavailableError("storage down", code=ErrorCode.STORAGE_UNAVAILABLE)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.now = 1000.0
    return clock


# The job store's own fixture (over SQLite and PostgreSQL), on this module's clock.
store = test_job_store.store


async def run_once(runner: JobRunner, store: JobStore, clock: Clock) -> JobRecord:
    """Past any backoff, claim the job and run it once; the job as the store then has it."""
    clock.now += 3600
    (job,) = store.claim_jobs("w1", limit=1, lease_s=30)
    await runner._run_job(job)
    return store.get_job(job.id)


def runner_for(store: JobStore, executor: FailingExecutor, **jobs: Any) -> JobRunner:
    return JobRunner(store, executor, JobsConfig(**jobs), worker_id="w1")


@pytest.mark.parametrize(
    ("outage", "bound"),
    [
        (lambda: replica_lost(), "max_replica_losses"),
        (lambda: storage_down(), "max_storage_outages"),
    ],
    ids=["lost model replica", "image store down"],
)
async def test_an_outage_spends_no_attempt(store, clock, outage, bound):
    """A lost model replica, or an image store that cannot take the result, is not the
    job's fault: the job runs again without spending an attempt."""
    (created,) = make_jobs(1)
    store.create_jobs([created], max_attempts=1)
    executor = FailingExecutor(outage(), outage())
    runner = runner_for(store, executor, max_attempts=1, **{bound: 5})
    for _ in range(2):
        job = await run_once(runner, store, clock)
        assert (job.status, job.attempts) == ("queued", 0)
        assert job.error["code"] == outage().code
    job = await run_once(runner, store, clock)
    assert (job.status, job.attempts, executor.calls) == ("succeeded", 1, 3)


async def test_a_job_that_keeps_losing_its_replica_ends_failed(store, clock):
    """The poison pill: past `max_replica_losses`, each loss spends an attempt."""
    (created,) = make_jobs(1)
    store.create_jobs([created], max_attempts=2)
    executor = FailingExecutor(*(replica_lost() for _ in range(10)))
    runner = runner_for(store, executor, max_attempts=2, max_replica_losses=3)
    seen = [(job.status, job.attempts) for job in [await run_once(runner, store, clock)]]
    while seen[-1][0] == "queued":
        seen.append(((job := await run_once(runner, store, clock)).status, job.attempts))
    # Three free losses, then two that spend the job's two attempts.
    assert seen == [("queued", 0)] * 3 + [("queued", 1), ("failed", 2)]
    assert job.error["code"] == ErrorCode.REPLICA_UNAVAILABLE
    assert executor.calls == 5


async def test_an_image_store_down_past_its_bound_spends_attempts(store, clock):
    (created,) = make_jobs(1)
    store.create_jobs([created], max_attempts=1)
    executor = FailingExecutor(storage_down(), storage_down())
    runner = runner_for(store, executor, max_attempts=1, max_storage_outages=1)
    job = await run_once(runner, store, clock)
    assert (job.status, job.attempts) == ("queued", 0)
    job = await run_once(runner, store, clock)
    assert (job.status, job.attempts) == ("failed", 1)


async def test_the_jobs_own_failures_spend_attempts_and_a_4xx_fails_at_once(store, clock):
    first, second = make_jobs(2)
    store.create_jobs([first], max_attempts=2)
    timed_out = ServiceUnavailableError("the model timed out", code=ErrorCode.MODEL_TIMEOUT)
    runner = runner_for(store, FailingExecutor(timed_out, timed_out), max_attempts=2)
    job = await run_once(runner, store, clock)
    assert (job.id, job.status, job.attempts) == (first.id, "queued", 1)
    job = await run_once(runner, store, clock)
    assert (job.status, job.attempts) == ("failed", 2)

    store.create_jobs([second], max_attempts=2)
    bad = InvalidRequestError("the prompt is too long", param="prompt")
    runner = runner_for(store, FailingExecutor(bad), max_attempts=2)
    job = await run_once(runner, store, clock)
    assert (job.id, job.status, job.attempts) == (second.id, "failed", 1)
    assert job.error == {"code": bad.code, "message": bad.message, "param": "prompt"}


async def test_the_runner_drops_old_previews_as_it_goes(store, clock):
    (job,) = make_jobs(1)
    store.create_jobs([job], max_attempts=1)
    (claimed,) = store.claim_jobs("w0", limit=1, lease_s=30)
    assert store.add_preview(job.id, {"partial_image_index": 0, "b64_json": "AA=="})
    store.finish_job(job.id, claimed.lease_token, result={"images": [], "steps": 1})
    clock.now += 61
    runner = runner_for(store, FailingExecutor(), sweep_interval_s=0.05, poll_interval_s=0.05)
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(200):  # at most ~10 s; it takes one pass of the loop
            if [e.kind for e in store.job_events(job.id)] == ["status", "status", "status"]:
                break
            await asyncio.sleep(0.05)
        assert [e.kind for e in store.job_events(job.id)] == ["status", "status", "status"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
