"""The job store: jobs, batches, Idempotency-Keys and the webhook outbox, in one SQL database.

SQLite is the embedded default; PostgreSQL serves several nodes. Both run the same
SQLAlchemy Core statements. Claims are a single `UPDATE ... FROM (SELECT ... FOR UPDATE
SKIP LOCKED) RETURNING`: on PostgreSQL two runners never take the same job and never
wait on each other; SQLite has one writer at a time (`BEGIN IMMEDIATE`), which gives the
same guarantee.

Every terminal transition writes its webhook delivery in the same transaction (an
outbox), so a job never ends without its callback being due, and never gets two.
All methods are synchronous; async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from serve_app.db import migrate, open_engine, ping, write_transaction
from serve_app.errors import ConflictError, ErrorCode, NotFoundError, UnprocessableError
from serve_app.jobs.records import BatchRecord, DeliveryRecord, JobEvent, JobRecord, NewJob
from serve_app.jobs.schema import (
    batches,
    idempotency_keys,
    job_events,
    jobs,
    webhook_deliveries,
)
from serve_app.jobs.views import batch_object, event_payload, job_object
from serve_app.protocol import TERMINAL_JOB_STATUSES, BatchStatus, DeliveryStatus, JobStatus

logger = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _held(job_id: str, lease_token: str) -> ColumnElement[bool]:
    """The job is still running under this lease: the condition of every write a worker makes."""
    return and_(
        jobs.c.id == job_id, jobs.c.lease_token == lease_token, jobs.c.status == JobStatus.RUNNING
    )


def _requeued(run_after: float, **more: Any) -> dict[str, Any]:
    """Column values of a job handed back to the queue: no worker, no lease."""
    return {
        "status": JobStatus.QUEUED,
        "worker_id": None,
        "lease_token": None,
        "lease_expires_at": None,
        "run_after": run_after,
        **more,
    }


def _status_data(job: JobRecord) -> dict[str, Any]:
    """A status event's payload: the status, the attempt, and why, if it failed or waits."""
    data: dict[str, Any] = {"status": job.status, "attempts": job.attempts}
    if job.error is not None and job.status != JobStatus.SUCCEEDED:
        data["error"] = job.error
    return data


def _add_event(
    connection: Connection, job_id: str, kind: str, data: dict[str, Any], now: float
) -> None:
    """Append an event to a job's stream. Callers have updated (so locked) the job's row
    in this transaction first: the next `seq` cannot be taken twice."""
    last = connection.execute(
        select(func.coalesce(func.max(job_events.c.seq), 0)).where(job_events.c.job_id == job_id)
    ).scalar_one()
    connection.execute(
        insert(job_events).values(
            job_id=job_id, seq=last + 1, kind=kind, data=_dumps(data), created_at=now
        )
    )


def _ended(status: str, now: float, **more: Any) -> dict[str, Any]:
    """Column values of a job that reached a terminal state; its lease is gone."""
    return {
        "status": status,
        "finished_at": now,
        "lease_token": None,
        "lease_expires_at": None,
        **more,
    }


class JobStore:
    def __init__(self, url: str, clock: Callable[[], float] = time.time):
        self.engine = open_engine(url)
        # Epoch seconds; leases compare them across nodes (keep NTP time).
        self.clock = clock

    def create_schema(self) -> None:
        migrate(self.engine, "jobs")

    def dispose(self) -> None:
        self.engine.dispose()

    def _write(self) -> AbstractContextManager[Connection]:
        return write_transaction(self.engine)

    def ping(self) -> None:
        ping(self.engine)

    def _read(self) -> AbstractContextManager[Connection]:
        return self.engine.begin()

    # --- Idempotency-Key ---------------------------------------------------------------

    def reserve_key(self, tenant: str, key: str, request_hash: str, lock_s: float) -> str | None:
        """Take an Idempotency-Key for a new request; None means: go on and create.

        Returns the id made under this key by an earlier, identical request. Raises
        422 when the key was used with another body, 409 while its first request is
        still being created.
        """
        now = self.clock()
        try:
            with self._write() as connection:
                connection.execute(
                    insert(idempotency_keys).values(
                        tenant=tenant,
                        key=key,
                        request_hash=request_hash,
                        state="creating",
                        resource_id=None,
                        locked_until=now + lock_s,
                        created_at=now,
                    )
                )
            return None
        except IntegrityError:
            pass
        with self._write() as connection:
            row = connection.execute(
                select(idempotency_keys).where(
                    idempotency_keys.c.tenant == tenant, idempotency_keys.c.key == key
                )
            ).one_or_none()
            if row is None:  # released between our insert and this read: try once more
                return self.reserve_key(tenant, key, request_hash, lock_s)
            if row.request_hash != request_hash:
                raise UnprocessableError(
                    "this Idempotency-Key was used with a different request body",
                    code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
                )
            if row.state == "done":
                return row.resource_id
            if row.locked_until > now:
                raise ConflictError(
                    "a request with this Idempotency-Key is still being processed; retry",
                    code=ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                )
            # Its creator died before finishing: take the key over.
            connection.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.tenant == tenant, idempotency_keys.c.key == key)
                .values(locked_until=now + lock_s)
            )
            return None

    def expire_keys(self, older_than_s: float) -> int:
        """Forget Idempotency-Keys older than `older_than_s` (kept at least a day)."""
        now = self.clock()
        with self._write() as connection:
            return connection.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.created_at < now - older_than_s,
                    idempotency_keys.c.state == "done",
                )
            ).rowcount

    def release_key(self, tenant: str, key: str) -> None:
        """Forget a key whose request was refused before anything was created."""
        with self._write() as connection:
            connection.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.tenant == tenant,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.state == "creating",
                )
            )

    # --- submission --------------------------------------------------------------------

    def create_jobs(
        self,
        new_jobs: list[NewJob],
        *,
        max_attempts: int,
        batch_id: str | None = None,
        batch_callback_url: str | None = None,
        batch_metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Insert jobs (and their batch) and settle the Idempotency-Key, all or nothing."""
        now = self.clock()
        tenant = new_jobs[0].tenant
        with self._write() as connection:
            if batch_id is not None:
                connection.execute(
                    insert(batches).values(
                        id=batch_id,
                        tenant=tenant,
                        status=BatchStatus.IN_PROGRESS,
                        callback_url=batch_callback_url,
                        client_metadata=_dumps(batch_metadata),
                        total=len(new_jobs),
                        created_at=now,
                    )
                )
            connection.execute(
                insert(jobs),
                [
                    {
                        "id": job.id,
                        "tenant": job.tenant,
                        "type": job.type,
                        "request": _dumps(job.request),
                        "client_metadata": _dumps(job.client_metadata),
                        "callback_url": job.callback_url,
                        "batch_id": batch_id,
                        "status": JobStatus.QUEUED,
                        "attempts": 0,
                        "max_attempts": max_attempts,
                        "run_after": now,
                        # Strictly increasing within one submission, so a batch keeps its order.
                        "created_at": now + index * 1e-6,
                    }
                    for index, job in enumerate(new_jobs)
                ],
            )
            for job in new_jobs:
                _add_event(
                    connection, job.id, "status", {"status": JobStatus.QUEUED, "attempts": 0}, now
                )
            if idempotency_key is not None:
                connection.execute(
                    update(idempotency_keys)
                    .where(
                        idempotency_keys.c.tenant == tenant,
                        idempotency_keys.c.key == idempotency_key,
                    )
                    .values(state="done", resource_id=batch_id or new_jobs[0].id)
                )

    # --- reads ------------------------------------------------------------------------------

    def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        query = select(jobs).where(jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        with self._read() as connection:
            row = connection.execute(query).one_or_none()
        return JobRecord.from_row(row) if row is not None else None

    def list_jobs(
        self,
        tenant: str,
        *,
        limit: int,
        after: str | None = None,
        status: str | None = None,
        batch_id: str | None = None,
    ) -> tuple[list[JobRecord], bool]:
        """Newest first; `after` is the last id of the previous page. Returns (page, has_more)."""
        query = select(jobs).where(jobs.c.tenant == tenant)
        if status is not None:
            query = query.where(jobs.c.status == status)
        if batch_id is not None:
            query = query.where(jobs.c.batch_id == batch_id)
        with self._read() as connection:
            if after is not None:
                anchor = connection.execute(
                    select(jobs.c.created_at, jobs.c.id).where(
                        jobs.c.id == after, jobs.c.tenant == tenant
                    )
                ).one_or_none()
                if anchor is None:
                    raise NotFoundError(f"no job {after!r} to page after", param="after")
                query = query.where(
                    tuple_(jobs.c.created_at, jobs.c.id) < tuple_(anchor.created_at, anchor.id)
                )
            rows = connection.execute(
                query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
            ).all()
        records = [JobRecord.from_row(row) for row in rows[:limit]]
        return records, len(rows) > limit

    def queue_position(self, job: JobRecord) -> int | None:
        """Queued jobs ahead of this one, across tenants (0 = next)."""
        if job.status != JobStatus.QUEUED:
            return None
        with self._read() as connection:
            return connection.execute(
                select(func.count())
                .select_from(jobs)
                .where(
                    jobs.c.status == JobStatus.QUEUED,
                    tuple_(jobs.c.created_at, jobs.c.id) < tuple_(job.created_at, job.id),
                )
            ).scalar_one()

    def get_batch(self, batch_id: str, tenant: str | None = None) -> BatchRecord | None:
        query = select(batches).where(batches.c.id == batch_id)
        if tenant is not None:
            query = query.where(batches.c.tenant == tenant)
        with self._read() as connection:
            row = connection.execute(query).one_or_none()
            if row is None:
                return None
            counts = self._batch_counts(connection, batch_id)
        return BatchRecord.from_row(row, counts)

    def batch_job_ids(self, batch_id: str) -> list[str]:
        """In submission order."""
        with self._read() as connection:
            return self._batch_job_ids(connection, batch_id)

    @staticmethod
    def _batch_job_ids(connection: Connection, batch_id: str) -> list[str]:
        return list(
            connection.execute(
                select(jobs.c.id)
                .where(jobs.c.batch_id == batch_id)
                .order_by(jobs.c.created_at, jobs.c.id)
            ).scalars()
        )

    @staticmethod
    def _batch_counts(connection: Connection, batch_id: str) -> dict[str, int]:
        rows = connection.execute(
            select(jobs.c.status, func.count())
            .where(jobs.c.batch_id == batch_id)
            .group_by(jobs.c.status)
        ).all()
        return {status: count for status, count in rows}

    def latest_delivery(self, subject_id: str) -> DeliveryRecord | None:
        with self._read() as connection:
            row = connection.execute(
                select(webhook_deliveries)
                .where(webhook_deliveries.c.subject_id == subject_id)
                .order_by(webhook_deliveries.c.created_at.desc())
                .limit(1)
            ).one_or_none()
        return DeliveryRecord.from_row(row) if row is not None else None

    # --- cancel -----------------------------------------------------------------------------

    def cancel_job(self, tenant: str, job_id: str) -> JobRecord:
        """Queued or running → canceled. A canceled job stays canceled (repeat is harmless)."""
        now = self.clock()
        with self._write() as connection:
            row = connection.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.tenant == tenant,
                    jobs.c.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                )
                .values(
                    **_ended(
                        JobStatus.CANCELED,
                        now,
                        error=_dumps(
                            {"code": ErrorCode.CANCELED, "message": "canceled by the client"}
                        ),
                    )
                )
                .returning(*jobs.c)
            ).one_or_none()
            if row is not None:
                job = JobRecord.from_row(row)
                _add_event(connection, job.id, "status", _status_data(job), now)
                self._after_terminal(connection, job, now)
                return job
        job = self.get_job(job_id, tenant)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}", code=ErrorCode.JOB_NOT_FOUND, param="job_id")
        if job.status != JobStatus.CANCELED:
            raise ConflictError(
                f"job {job_id!r} already {job.status}; only queued or running jobs can be canceled",
                code=ErrorCode.JOB_NOT_CANCELABLE,
            )
        return job

    # --- the runner's side: claim, heartbeat, finish, sweep ----------------------------------

    def claim_jobs(self, worker_id: str, limit: int, lease_s: float) -> list[JobRecord]:
        """Take up to `limit` queued jobs, oldest first, under a fresh lease each."""
        if limit <= 0:
            return []
        now = self.clock()
        rows = self._claim_rows(
            jobs,
            [jobs.c.status == JobStatus.QUEUED, jobs.c.run_after <= now],
            [jobs.c.created_at, jobs.c.id],
            limit,
            {
                "status": JobStatus.RUNNING,
                "worker_id": worker_id,
                "lease_token": secrets.token_hex(16),
                "lease_expires_at": now + lease_s,
                "heartbeat_at": now,
                "attempts": jobs.c.attempts + 1,
                "started_at": func.coalesce(jobs.c.started_at, now),
            },
            after=lambda connection, rows: self._claimed(connection, rows, now),
        )
        return sorted((JobRecord.from_row(row) for row in rows), key=lambda j: j.created_at)

    @staticmethod
    def _claimed(connection: Connection, rows: list[Row], now: float) -> None:
        for row in rows:
            _add_event(connection, row.id, "status", _status_data(JobRecord.from_row(row)), now)

    def _claim_rows(
        self,
        table: Table,
        conditions: list,
        order_by: list,
        limit: int,
        values: dict[str, Any],
        after: Callable[[Connection, list[Row]], None] | None = None,
    ) -> list[Row]:
        """Lock up to `limit` matching rows others have not locked, update them, return them.

        A CTE, not `IN (subquery)`: PostgreSQL may run an IN subquery more than once,
        and with SKIP LOCKED each run can pick other rows, so more than `limit` would move.
        """
        chosen = (
            select(table.c.id)
            .where(*conditions)
            .order_by(*order_by)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("chosen")
        )
        with self._write() as connection:
            rows = connection.execute(
                update(table)
                .where(table.c.id == chosen.c.id, *conditions)
                .values(**values)
                .returning(*table.c)
            ).all()
            if after is not None:
                after(connection, rows)
            return rows

    def heartbeat(self, job_id: str, lease_token: str, lease_s: float) -> bool:
        """Extend a lease; False when the job is no longer ours (canceled or swept)."""
        now = self.clock()
        with self._write() as connection:
            updated = connection.execute(
                update(jobs)
                .where(_held(job_id, lease_token))
                .values(lease_expires_at=now + lease_s, heartbeat_at=now)
            ).rowcount
        return updated == 1

    def set_progress(self, job_ids: list[str], step: int, total: int) -> set[str]:
        """From the model replica's step callback; only running jobs move. Returns the
        ids that are still running (the others were canceled or taken back)."""
        now = self.clock()
        with self._write() as connection:
            moved = connection.execute(
                update(jobs)
                .where(jobs.c.id.in_(job_ids), jobs.c.status == JobStatus.RUNNING)
                .values(progress_step=step, progress_total=total)
                .returning(jobs.c.id)
            ).scalars()
            running = set(moved)
            for job_id in sorted(running):
                _add_event(connection, job_id, "progress", {"step": step, "total": total}, now)
        return running

    def running_jobs(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs are still running."""
        with self._read() as connection:
            return set(
                connection.execute(
                    select(jobs.c.id).where(
                        jobs.c.id.in_(job_ids), jobs.c.status == JobStatus.RUNNING
                    )
                ).scalars()
            )

    def add_preview(self, job_id: str, data: dict[str, Any]) -> bool:
        """A running job's partial image, as an event; False if it is no longer running."""
        now = self.clock()
        with self._write() as connection:
            held = connection.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING)
                .values(heartbeat_at=jobs.c.heartbeat_at)  # takes the row's lock
            ).rowcount
            if held:
                _add_event(connection, job_id, "preview", data, now)
        return bool(held)

    def expire_previews(self, older_than_s: float) -> int:
        """Drop preview events made more than `older_than_s` ago (each holds an image; the
        final images replace them). A reader further behind than that skips their ids. A
        job's last event stays whatever it is: the next `seq` is the last one's plus one,
        and an id a reader has seen is never given again."""
        now = self.clock()
        later = job_events.alias("later")
        with self._write() as connection:
            return connection.execute(
                delete(job_events).where(
                    job_events.c.kind == "preview",
                    job_events.c.created_at < now - older_than_s,
                    exists().where(
                        later.c.job_id == job_events.c.job_id, later.c.seq > job_events.c.seq
                    ),
                )
            ).rowcount

    def job_events(
        self, job_id: str, after: int = 0, kinds: tuple[str, ...] | None = None, limit: int = 500
    ) -> list[JobEvent]:
        """A job's events after `after` (a seq), oldest first."""
        query = select(job_events).where(job_events.c.job_id == job_id, job_events.c.seq > after)
        if kinds is not None:
            query = query.where(job_events.c.kind.in_(kinds))
        with self._read() as connection:
            rows = connection.execute(query.order_by(job_events.c.seq).limit(limit)).all()
        return [JobEvent.from_row(row) for row in rows]

    def finish_job(
        self,
        job_id: str,
        lease_token: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> JobRecord | None:
        """running → succeeded (with result) or failed (with error), if the lease is still ours.

        None means the job was canceled or taken over meanwhile; nothing was written.
        """
        now = self.clock()
        status = JobStatus.SUCCEEDED if error is None else JobStatus.FAILED
        values = _ended(status, now, result=_dumps(result), error=_dumps(error))
        if result is not None:
            values["progress_step"] = values["progress_total"] = result.get("steps")
        with self._write() as connection:
            row = connection.execute(
                update(jobs).where(_held(job_id, lease_token)).values(**values).returning(*jobs.c)
            ).one_or_none()
            if row is None:
                return None
            job = JobRecord.from_row(row)
            _add_event(connection, job.id, "status", _status_data(job), now)
            self._after_terminal(connection, job, now)
        return job

    def retry_job(
        self,
        job_id: str,
        lease_token: str,
        *,
        delay_s: float,
        error: dict[str, Any],
        count_attempt: bool = True,
    ) -> JobRecord | None:
        """A transient failure: back to the queue after `delay_s`, or failed when the job
        has used its attempts. A full model queue is waited out without counting one
        (`count_attempt=False`): the job was never run."""
        now = self.clock()
        job = self.get_job(job_id)
        if job is None or job.lease_token != lease_token or job.status != JobStatus.RUNNING:
            return None
        if count_attempt and job.attempts >= job.max_attempts:
            return self.finish_job(job_id, lease_token, error=error)
        with self._write() as connection:
            row = connection.execute(
                update(jobs)
                .where(_held(job_id, lease_token))
                .values(
                    **_requeued(
                        now + delay_s,
                        error=_dumps(error),
                        attempts=jobs.c.attempts - (0 if count_attempt else 1),
                    )
                )
                .returning(*jobs.c)
            ).one_or_none()
            if row is None:
                return None
            job = JobRecord.from_row(row)
            _add_event(
                connection, job.id, "status", {**_status_data(job), "run_after": job.run_after}, now
            )
        return job

    def requeues_for(self, job_id: str, code: str) -> int:
        """How many times the job went back to the queue after an error with this code
        (its status events say; a job has few)."""
        with self._read() as connection:
            rows = connection.execute(
                select(job_events.c.data).where(
                    job_events.c.job_id == job_id, job_events.c.kind == "status"
                )
            ).scalars()
            events = [json.loads(data) for data in rows]
        return sum(
            1
            for event in events
            if event.get("status") == JobStatus.QUEUED
            and (event.get("error") or {}).get("code") == code
        )

    def sweep_expired(self) -> tuple[int, int]:
        """Running jobs whose lease ran out (their worker died): re-queue them, or fail
        those that have used their attempts. Returns (requeued, failed)."""
        now = self.clock()
        requeued = failed = 0
        with self._write() as connection:
            expired = connection.execute(
                select(jobs.c.id, jobs.c.attempts, jobs.c.max_attempts)
                .where(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_expires_at < now)
                .with_for_update(skip_locked=True)
            ).all()
            for job_id, attempts, max_attempts in expired:
                still_expired = and_(
                    jobs.c.id == job_id,
                    jobs.c.status == JobStatus.RUNNING,
                    jobs.c.lease_expires_at < now,
                )
                if attempts >= max_attempts:
                    row = connection.execute(
                        update(jobs)
                        .where(still_expired)
                        .values(
                            **_ended(
                                JobStatus.FAILED,
                                now,
                                error=_dumps(
                                    {
                                        "code": ErrorCode.WORKER_LOST,
                                        "message": f"the worker running this job was lost "
                                        f"{attempts} times",
                                    }
                                ),
                            )
                        )
                        .returning(*jobs.c)
                    ).one_or_none()
                    if row is not None:
                        job = JobRecord.from_row(row)
                        _add_event(connection, job.id, "status", _status_data(job), now)
                        self._after_terminal(connection, job, now)
                        failed += 1
                else:
                    row = connection.execute(
                        update(jobs)
                        .where(still_expired)
                        .values(**_requeued(now))
                        .returning(*jobs.c)
                    ).one_or_none()
                    if row is not None:
                        job = JobRecord.from_row(row)
                        _add_event(connection, job.id, "status", _status_data(job), now)
                        requeued += 1
        if requeued or failed:
            logger.warning(
                "sweeper: %d job(s) re-queued, %d failed after lost workers", requeued, failed
            )
        return requeued, failed

    def release_jobs(self, worker_id: str) -> int:
        """A worker stopping on purpose hands its running jobs back, attempt not counted."""
        now = self.clock()
        with self._write() as connection:
            rows = connection.execute(
                update(jobs)
                .where(jobs.c.worker_id == worker_id, jobs.c.status == JobStatus.RUNNING)
                .values(**_requeued(now, attempts=jobs.c.attempts - 1))
                .returning(*jobs.c)
            ).all()
            for row in rows:
                job = JobRecord.from_row(row)
                _add_event(connection, job.id, "status", _status_data(job), now)
        return len(rows)

    def _after_terminal(self, connection: Connection, job: JobRecord, now: float) -> None:
        """In the transaction that ended a job: its webhook, and its batch if it was the last.
        Its previews stay until `expire_previews`: a stream a poll behind still gets them."""
        if job.callback_url:
            self._enqueue(
                connection,
                job.tenant,
                job.id,
                f"job.{job.status}",
                job.callback_url,
                job_object(job),
                now,
            )
        if job.batch_id is None:
            return
        # Lock the batch row, so the last two jobs ending at once cannot both miss it.
        batch_row = connection.execute(
            select(batches).where(batches.c.id == job.batch_id).with_for_update()
        ).one()
        if batch_row.status != BatchStatus.IN_PROGRESS:
            return
        counts = self._batch_counts(connection, job.batch_id)
        if any(status not in TERMINAL_JOB_STATUSES for status in counts):
            return
        connection.execute(
            update(batches)
            .where(batches.c.id == job.batch_id)
            .values(status=BatchStatus.COMPLETED, finished_at=now)
        )
        if batch_row.callback_url:
            finished = connection.execute(select(batches).where(batches.c.id == job.batch_id)).one()
            batch = BatchRecord.from_row(finished, counts)
            self._enqueue(
                connection,
                batch.tenant,
                batch.id,
                "batch.completed",
                batch.callback_url,
                # With its job ids, in submission order, as GET /v1/batches/{id} shows them.
                batch_object(batch, self._batch_job_ids(connection, batch.id)),
                now,
            )

    # --- webhook outbox ------------------------------------------------------------------------

    @staticmethod
    def _enqueue(
        connection: Connection,
        tenant: str,
        subject_id: str,
        event_name: str,
        url: str,
        data: dict[str, Any],
        now: float,
    ) -> None:
        connection.execute(
            insert(webhook_deliveries).values(
                id=new_id("msg"),
                tenant=tenant,
                subject_id=subject_id,
                event=event_name,
                url=url,
                payload=json.dumps(event_payload(event_name, data, now), separators=(",", ":")),
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    def claim_deliveries(self, limit: int, lease_s: float) -> list[DeliveryRecord]:
        """Due deliveries, each under a lease so two runners never send one at once."""
        now = self.clock()
        rows = self._claim_rows(
            webhook_deliveries,
            [
                webhook_deliveries.c.status == DeliveryStatus.PENDING,
                webhook_deliveries.c.next_attempt_at <= now,
                or_(
                    webhook_deliveries.c.lease_expires_at.is_(None),
                    webhook_deliveries.c.lease_expires_at < now,
                ),
            ],
            [webhook_deliveries.c.next_attempt_at],
            limit,
            {"lease_token": secrets.token_hex(16), "lease_expires_at": now + lease_s},
        )
        return [DeliveryRecord.from_row(row) for row in rows]

    def record_delivery(
        self,
        delivery_id: str,
        lease_token: str,
        *,
        status: str,
        status_code: int | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        """One attempt's outcome: delivered, failed for good, disabled, or pending again."""
        now = self.clock()
        values: dict[str, Any] = {
            "status": status,
            "attempts": webhook_deliveries.c.attempts + 1,
            "last_status_code": status_code,
            "last_error": error[:300] if error else None,
            "lease_token": None,
            "lease_expires_at": None,
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if status == DeliveryStatus.DELIVERED:
            values["delivered_at"] = now
        with self._write() as connection:
            connection.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.lease_token == lease_token,
                )
                .values(**values)
            )
