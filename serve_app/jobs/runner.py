"""The JobRunner's loop: claim jobs under a lease, run them, keep the lease alive, sweep
the jobs of dead workers, and send the webhooks the store has queued.

Plain asyncio; the Ray deployment starts `JobRunner.run()` and stops it. Several runners
(replicas, nodes) share one store: leases keep them from running a job twice at once,
and a result is only written by the lease that is still current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from serve_app.config import JobsConfig
from serve_app.db import is_outage
from serve_app.errors import ErrorCode, ServiceError
from serve_app.jobs.delivery import WebhookDispatcher
from serve_app.jobs.records import JobRecord
from serve_app.jobs.store import JobStore
from serve_app.protocol import JobStatus

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Executor(Protocol):
    async def execute(self, job: JobRecord) -> dict[str, Any]: ...

    def discard(self, result: dict[str, Any]) -> None: ...


def error_body(error: BaseException) -> dict[str, Any]:
    if isinstance(error, ServiceError):
        return {"code": error.code, "message": error.message, "param": error.param}
    return {"code": ErrorCode.INTERNAL_ERROR, "message": "the job failed unexpectedly"}


KEY_EXPIRY_INTERVAL_S = 3600.0
# A store call that must not be lost (a job's end) is retried this often, doubling to the cap.
STORE_RETRY_S = (0.5, 10.0)
# A model's queue was full: the job never ran, so waiting does not use an attempt.
CAPACITY_CODES = frozenset({ErrorCode.MODEL_OVERLOADED})


def is_transient(error: BaseException) -> bool:
    """Worth another attempt: capacity, a lost replica, storage down (503s), or a bug
    we cannot classify. A 4xx is the request's own fault and would fail again."""
    return not isinstance(error, ServiceError) or error.status_code >= 500


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        executor: Executor,
        config: JobsConfig,
        worker_id: str,
        webhooks: WebhookDispatcher | None = None,
    ):
        self.store = store
        self.executor = executor
        self.config = config
        self.worker_id = worker_id
        self.webhooks = webhooks
        self.running: dict[str, asyncio.Task] = {}
        self._rng = random.Random()
        # When this runner last failed to reach the store (monotonic; never: -inf).
        self._store_failed_at = float("-inf")

    async def run(self) -> None:
        """Until cancelled. A store outage is logged and waited out, never fatal."""
        tasks = [asyncio.create_task(self._claim_loop())]
        if self.webhooks is not None:
            tasks.append(asyncio.create_task(self.webhooks.run()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, *self.running.values()]:
                task.cancel()
            await asyncio.gather(*tasks, *self.running.values(), return_exceptions=True)

    async def _claim_loop(self) -> None:
        next_sweep = next_key_expiry = 0.0
        while True:
            claimed = 0
            try:
                if time.monotonic() >= next_sweep:
                    if self._leases_trustworthy():
                        await asyncio.to_thread(self.store.sweep_expired)
                    await asyncio.to_thread(self.store.expire_previews, self.config.preview_keep_s)
                    next_sweep = time.monotonic() + self.config.sweep_interval_s
                # Keys live a day or more: forgetting them hourly is soon enough.
                if time.monotonic() >= next_key_expiry:
                    await asyncio.to_thread(self.store.expire_keys, self.config.idempotency_ttl_s)
                    next_key_expiry = time.monotonic() + KEY_EXPIRY_INTERVAL_S
                free = self.config.runner_concurrency - len(self.running)
                if free > 0:
                    jobs = await asyncio.to_thread(
                        self.store.claim_jobs, self.worker_id, free, self.config.lease_s
                    )
                    for job in jobs:
                        self.running[job.id] = asyncio.create_task(self._run_job(job))
                    claimed = len(jobs)
            except Exception as error:
                if is_outage(error):
                    self._store_failed_at = time.monotonic()
                logger.exception("job runner %s: store unavailable; retrying", self.worker_id)
            # Straight back for more while the queue gives work and there is room.
            if not claimed or len(self.running) >= self.config.runner_concurrency:
                await asyncio.sleep(self.config.poll_interval_s)

    def _leases_trustworthy(self) -> bool:
        """Whether an expired lease means a dead worker. Not within a lease of this runner
        failing to reach the store: every live worker's heartbeats failed too, and
        sweeping now would re-run their jobs and spend their attempts. One lease after the
        store is back, they have renewed, and what is still expired is dead."""
        return time.monotonic() - self._store_failed_at >= self.config.lease_s

    async def _once_stored(self, job: JobRecord, call: Callable[[], T]) -> T:
        """`call` on the store (recording a job's end: its result, its error, its requeue),
        tried until the store answers: work already done is not thrown away for an outage
        of the store. Other errors propagate; the lease keeper goes on meanwhile, so a
        lease lost is still seen."""
        delay, cap = STORE_RETRY_S
        while True:
            try:
                return await asyncio.to_thread(call)
            except Exception as error:
                if not is_outage(error):
                    raise
                self._store_failed_at = time.monotonic()
                logger.warning("job %s: store unavailable to record its end; retrying", job.id)
            await asyncio.sleep(delay * self._rng.uniform(0.8, 1.2))
            delay = min(cap, delay * 2)

    async def _run_job(self, job: JobRecord) -> None:
        work = asyncio.create_task(self.executor.execute(job))
        lease_lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(job, work, lease_lost))
        try:
            result = await work
        except asyncio.CancelledError:
            if not lease_lost.is_set():
                raise  # the runner itself is stopping
            logger.info("job %s: lease lost (canceled or taken over); stopped", job.id)
        except Exception as error:
            await self._failed(job, error)
        else:
            await self._succeeded(job, result)
        finally:
            keeper.cancel()
            self.running.pop(job.id, None)

    async def _keep_lease(
        self, job: JobRecord, work: asyncio.Task, lease_lost: asyncio.Event
    ) -> None:
        interval = self.config.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                kept = await asyncio.to_thread(
                    self.store.heartbeat, job.id, job.lease_token, self.config.lease_s
                )
            except Exception as error:
                if is_outage(error):
                    self._store_failed_at = time.monotonic()
                logger.warning("job %s: heartbeat failed; will retry", job.id, exc_info=True)
                continue
            if not kept:
                lease_lost.set()
                work.cancel()
                return

    async def _succeeded(self, job: JobRecord, result: dict[str, Any]) -> None:
        finished = await self._once_stored(
            job, lambda: self.store.finish_job(job.id, job.lease_token, result=result)
        )
        if finished is not None:
            return
        # Canceled while its images were being made: do not keep them. (A job taken over
        # by another worker keeps them: the same keys hold that worker's images.)
        current = await asyncio.to_thread(self.store.get_job, job.id)
        if current is not None and current.status == JobStatus.CANCELED:
            await asyncio.to_thread(self.executor.discard, result)

    async def _spends_attempt(self, job: JobRecord, code: str) -> bool:
        """Only a job's own failure spends an attempt. A full model queue never does (the
        job did not run); a lost model replica (its node died, it was restarted) does not
        either, until the job has met `jobs.max_replica_losses` of them: one that takes
        its replica down every time is a poison pill, and spends attempts from then on.
        An image store that cannot take the result does not, up to
        `jobs.max_storage_outages` times."""
        if code in CAPACITY_CODES:
            return False
        # Outages, not the job's fault: a lost model replica, an image store (S3, the
        # local folder) that failed to take the result. Each is free up to its bound.
        free_outages = {
            ErrorCode.REPLICA_UNAVAILABLE: self.config.max_replica_losses,
            ErrorCode.STORAGE_UNAVAILABLE: self.config.max_storage_outages,
        }
        if code in free_outages:
            requeues = await self._once_stored(job, lambda: self.store.requeues_for(job.id, code))
            return requeues >= free_outages[code]
        return True

    async def _failed(self, job: JobRecord, error: Exception) -> None:
        body = error_body(error)
        if is_transient(error):
            if not isinstance(error, ServiceError):
                logger.exception("job %s failed unexpectedly", job.id, exc_info=error)
            # Back off 2, 4, 8 ... s (at most a minute), jittered so retries spread out.
            delay = min(60.0, 2.0**job.attempts) * self._rng.uniform(0.8, 1.2)
            count_attempt = await self._spends_attempt(job, body["code"])
            await self._once_stored(
                job,
                lambda: self.store.retry_job(
                    job.id,
                    job.lease_token,
                    delay_s=delay,
                    error=body,
                    count_attempt=count_attempt,
                ),
            )
        else:
            await self._once_stored(
                job, lambda: self.store.finish_job(job.id, job.lease_token, error=body)
            )

    async def release(self) -> None:
        """On a graceful stop: cancel local work and hand its jobs back to the queue at
        once, without counting an attempt (a crash instead leaves them to the sweeper)."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.release_jobs, self.worker_id)
