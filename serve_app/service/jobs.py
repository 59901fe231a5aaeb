"""Durable jobs and batches: submit, read, list and cancel them for a tenant.

A job's request is checked at submission as far as it can be without running it (schema,
model, limits, the caller's access), so a bad request is a 400 now rather than a failed
job later. Its seed is fixed then too: a job re-run after a lost worker makes the same
images under the same keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter

from serve_app.errors import (
    ConflictError,
    ErrorCode,
    InvalidRequestError,
    NotFoundError,
    ServiceError,
)
from serve_app.jobs.records import JobRecord, NewJob
from serve_app.jobs.store import JobStore, new_id
from serve_app.jobs.views import batch_object, job_object
from serve_app.jobs.webhooks import callback_policy
from serve_app.protocol import (
    TERMINAL_JOB_STATUSES,
    BatchCreateRequest,
    ChatJob,
    JobCreateRequest,
    JobItem,
    JobStatus,
)
from serve_app.service.chat import ChatService
from serve_app.service.images import ImageService, pick_seed

# An open event stream with nothing to say sends a comment this often, so proxies and
# load balancers do not close it as idle.
KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class JobStreamEvent:
    """One event of GET /v1/jobs/{id}/events. `id` is the event's seq (what Last-Event-ID
    names); a queue-position update has none, as it is not replayed."""

    id: int | None
    kind: str
    data: dict[str, Any]


JOB_ITEM: TypeAdapter[JobItem] = TypeAdapter(JobItem)


def request_hash(route: str, body: BaseModel) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


class JobService:
    def __init__(
        self,
        images: ImageService,
        store: JobStore,
        webhook_secrets: list[str],
        chat: ChatService | None = None,
    ):
        self.images = images
        self.chat = chat
        self.config = images.config
        self.store = store
        self.webhooks_enabled = bool(webhook_secrets)
        self.policy = callback_policy(self.config.jobs.webhooks)

    # --- submission --------------------------------------------------------------------------

    async def submit_job(
        self,
        tenant: str,
        body: JobCreateRequest,
        idempotency_key: str | None,
        authorize: Callable[[str], None],
    ) -> tuple[dict[str, Any], bool]:
        """(the job, replayed): replayed is True when the Idempotency-Key found it made."""
        callback_url = await self._callback(body.callback_url)
        job = await self._prepare(tenant, body, ("request",), authorize, callback_url)
        job_id, replayed = await self._create(
            tenant, idempotency_key, request_hash("jobs", body), [job], batch=None
        )
        return await self.read_job(tenant, job_id, base_url=None), replayed

    async def retry_job(
        self, tenant: str, job_id: str, authorize: Callable[[str], None]
    ) -> dict[str, Any]:
        """A new job with a failed or canceled job's request, seed and metadata: checked
        again as a new submission (the model, the key's scopes, the callback URL)."""
        job = await self.find_job(tenant, job_id)
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELED):
            raise ConflictError(
                f"job {job_id!r} is {job.status}; only a failed or canceled job can be retried",
                code=ErrorCode.JOB_NOT_RETRYABLE,
                param="job_id",
            )
        item = JOB_ITEM.validate_python(
            {"type": job.type, "request": job.request, "metadata": job.client_metadata}
        )
        callback_url = await self._callback(job.callback_url)
        new = await self._prepare(tenant, item, ("request",), authorize, callback_url)
        new_job_id, _ = await self._create(tenant, None, "", [new], batch=None)
        return await self.read_job(tenant, new_job_id, base_url=None)

    async def submit_batch(
        self,
        tenant: str,
        body: BatchCreateRequest,
        idempotency_key: str | None,
        authorize: Callable[[str], None],
    ) -> tuple[dict[str, Any], bool]:
        most = self.config.jobs.max_batch_jobs
        if len(body.jobs) > most:
            raise InvalidRequestError(
                f"a batch holds at most {most} jobs, got {len(body.jobs)}",
                code=ErrorCode.TOO_MANY_JOBS,
                param="jobs",
            )
        callback_url = await self._callback(body.callback_url)
        jobs = [
            await self._prepare(tenant, item, ("jobs", index, "request"), authorize)
            for index, item in enumerate(body.jobs)
        ]
        batch_id, replayed = await self._create(
            tenant,
            idempotency_key,
            request_hash("batches", body),
            jobs,
            batch=(callback_url, body.metadata),
        )
        return await self.read_batch(tenant, batch_id), replayed

    async def _prepare(
        self,
        tenant: str,
        item: JobItem,
        location: tuple,
        authorize: Callable[[str], None],
        callback_url: str | None = None,
    ) -> NewJob:
        try:
            if isinstance(item, ChatJob):
                if self.chat is None:
                    raise InvalidRequestError(
                        "no vision-chat model is served here",
                        code=ErrorCode.MODEL_NOT_FOUND,
                        param="model",
                    )
                model = await self.chat.check_job_request(item.request)
            else:
                model = self.images.check_job_request(item.request)
        except ServiceError as error:
            # Name the field where it sits in this body: `jobs.3.request.size`.
            if error.param is not None:
                error.param = ".".join(map(str, (*location, error.param)))
            raise
        authorize(model.name)
        fixed: BaseModel
        if isinstance(item, ChatJob):
            # An answer in the job's result: never streamed.
            fixed = item.request.model_copy(
                update={"model": model.name, "seed": pick_seed(item.request.seed), "stream": False}
            )
        else:
            # Results are stored, never inlined: the job object carries their links. Its
            # previews (partial_images) go to GET /v1/jobs/{id}/events, never a stream.
            fixed = item.request.model_copy(
                update={
                    "model": model.name,
                    "seed": pick_seed(item.request.seed),
                    "response_format": "url",
                    "stream": False,
                }
            )
        return NewJob(
            id=new_id("job"),
            tenant=tenant,
            type=item.type,
            request=fixed.model_dump(mode="json", exclude_none=True),
            client_metadata=item.metadata,
            callback_url=callback_url,
        )

    async def _callback(self, url: str | None) -> str | None:
        if url is None:
            return None
        if not self.webhooks_enabled:
            raise InvalidRequestError(
                "webhooks are not configured on this service (no signing secret)",
                code=ErrorCode.WEBHOOKS_NOT_CONFIGURED,
                param="callback_url",
            )
        # Refused now if it leads somewhere private; checked again at every delivery,
        # as DNS may answer differently then.
        await self.policy.check_async(url, param="callback_url")
        return url

    async def _create(
        self,
        tenant: str,
        idempotency_key: str | None,
        digest: str,
        jobs: list[NewJob],
        batch: tuple[str | None, dict[str, str] | None] | None,
    ) -> tuple[str, bool]:
        """Insert under the Idempotency-Key; returns (job or batch id, replayed)."""
        if idempotency_key is not None:
            existing = await asyncio.to_thread(
                self.store.reserve_key,
                tenant,
                idempotency_key,
                digest,
                self.config.jobs.idempotency_lock_s,
            )
            if existing is not None:
                return existing, True
        batch_id = new_id("batch") if batch is not None else None
        try:
            await asyncio.to_thread(
                lambda: self.store.create_jobs(
                    jobs,
                    max_attempts=self.config.jobs.max_attempts,
                    batch_id=batch_id,
                    batch_callback_url=batch[0] if batch else None,
                    batch_metadata=batch[1] if batch else None,
                    idempotency_key=idempotency_key,
                )
            )
        except BaseException:
            if idempotency_key is not None:
                await asyncio.to_thread(self.store.release_key, tenant, idempotency_key)
            raise
        return batch_id or jobs[0].id, False

    # --- reads and cancel ----------------------------------------------------------------------

    def _image_url(self, base_url: str | None) -> Callable[[str], str] | None:
        if base_url is None:
            return None
        return lambda key: self.images.storage.url(key, base_url)

    async def read_job(self, tenant: str, job_id: str, base_url: str | None) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            job = self.store.get_job(job_id, tenant)
            if job is None:
                raise NotFoundError(
                    f"no job {job_id!r}", code=ErrorCode.JOB_NOT_FOUND, param="job_id"
                )
            return job_object(
                job,
                image_url=self._image_url(base_url),
                queue_position=self.store.queue_position(job),
                delivery=self.store.latest_delivery(job.id) if job.callback_url else None,
            )

        return await asyncio.to_thread(read)

    async def list_jobs(
        self,
        tenant: str,
        *,
        limit: int,
        after: str | None,
        status: str | None,
        batch_id: str | None,
        base_url: str,
    ) -> dict[str, Any]:
        page, has_more = await asyncio.to_thread(
            lambda: self.store.list_jobs(
                tenant, limit=limit, after=after, status=status, batch_id=batch_id
            )
        )
        data = [job_object(job, image_url=self._image_url(base_url)) for job in page]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }

    async def find_job(self, tenant: str, job_id: str) -> JobRecord:
        job = await asyncio.to_thread(self.store.get_job, job_id, tenant)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}", code=ErrorCode.JOB_NOT_FOUND, param="job_id")
        return job

    async def job_events(
        self,
        job: JobRecord,
        *,
        after: int,
        previews: bool,
        base_url: str,
        stream_s: float,
    ) -> AsyncIterator[JobStreamEvent | None]:
        """A job's events after seq `after`, as they happen, until it ends or `stream_s`
        passes; None now and then when there was nothing to say (a keep-alive). The event
        that ends the job carries the job object, with fresh links to its images."""
        jobs = self.config.jobs
        kinds = None if previews else ("status", "progress")
        last_seq, last_position = after, None
        started = quiet_since = time.monotonic()
        while True:
            # The job before its events: an end seen here has its event written already.
            current = await asyncio.to_thread(self.store.get_job, job.id)
            if current is None:
                return
            events = await asyncio.to_thread(self.store.job_events, job.id, last_seq, kinds)
            for event in events:
                data = {"job_id": job.id, "seq": event.seq, "created_at": event.created_at}
                data.update(event.data)
                if event.kind == "status" and event.data["status"] in TERMINAL_JOB_STATUSES:
                    if current.status not in TERMINAL_JOB_STATUSES:
                        # It ended between the two reads; the end and its event are one
                        # write, so a read now sees the job as it ended.
                        current = await asyncio.to_thread(self.store.get_job, job.id) or current
                    data["job"] = job_object(current, image_url=self._image_url(base_url))
                yield JobStreamEvent(event.seq, event.kind, data)
                last_seq, quiet_since = event.seq, time.monotonic()
            if events:
                continue  # there may be more than one read returns
            if current.status in TERMINAL_JOB_STATUSES:
                return
            if current.status == JobStatus.QUEUED:
                position = await asyncio.to_thread(self.store.queue_position, current)
                if position != last_position:
                    last_position, quiet_since = position, time.monotonic()
                    yield JobStreamEvent(
                        None, "queue", {"job_id": job.id, "queue_position": position}
                    )
            now = time.monotonic()
            if now - started >= stream_s:
                return
            if now - quiet_since >= KEEPALIVE_S:
                quiet_since = now
                yield None
            await asyncio.sleep(jobs.events_poll_s)

    async def cancel_job(self, tenant: str, job_id: str, base_url: str) -> dict[str, Any]:
        job = await asyncio.to_thread(self.store.cancel_job, tenant, job_id)
        return job_object(job, image_url=self._image_url(base_url))

    async def read_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            batch = self.store.get_batch(batch_id, tenant)
            if batch is None:
                raise NotFoundError(
                    f"no batch {batch_id!r}", code=ErrorCode.BATCH_NOT_FOUND, param="batch_id"
                )
            ids = self.store.batch_job_ids(batch_id)
            delivery = self.store.latest_delivery(batch_id) if batch.callback_url else None
            return batch_object(batch, ids, delivery)

        return await asyncio.to_thread(read)
