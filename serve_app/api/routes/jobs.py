"""/v1/jobs and /v1/batches: durable jobs, scoped to the caller's tenant."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from serve_app.api.dependencies import Jobs
from serve_app.api.errors import error_responses
from serve_app.api.sse import MEDIA_TYPE, SSE_HEADERS, SSE_SCHEMA, sse
from serve_app.api.tenancy import authorize_model, tenant_of
from serve_app.errors import ErrorCode, InvalidRequestError
from serve_app.protocol import (
    BatchCreateRequest,
    BatchObject,
    JobCreateRequest,
    JobList,
    JobObject,
    JobStatus,
)
from serve_app.security.scopes import route_path

router = APIRouter(tags=["jobs"])

# Printable ASCII without spaces at the ends; what Stripe and the IETF draft expect.
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,253}[\x21-\x7e]$|^[\x21-\x7e]$")
IdempotencyKey = Header(
    None,
    alias="Idempotency-Key",
    # Documented, and checked by checked_idempotency_key (its own error code).
    json_schema_extra={"pattern": IDEMPOTENCY_KEY.pattern, "maxLength": 255},
    description="Retrying with the same key and body returns the first job instead of a new "
    "one (kept a day at least); the same key with another body is a 422.",
)
SUBMIT_ERRORS = error_responses(400, 404, 409, 413, 422)
READ_ERRORS = error_responses(404)


def checked_idempotency_key(value: str | None) -> str | None:
    if value is not None and not IDEMPOTENCY_KEY.fullmatch(value):
        raise InvalidRequestError(
            "Idempotency-Key must be 1-255 printable ASCII characters",
            code=ErrorCode.INVALID_IDEMPOTENCY_KEY,
            param="Idempotency-Key",
        )
    return value


def accepted(body: dict, location: str, replayed: bool) -> JSONResponse:
    headers = {"Location": location}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202, headers=headers)


def authorizer(request: Request):
    return lambda model_name: authorize_model(request, model_name)


@router.post("/v1/jobs", status_code=202, response_model=JobObject, responses=SUBMIT_ERRORS)
async def create_job(
    request: Request,
    body: JobCreateRequest,
    jobs: Jobs,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Queue one generation or edit; poll the job or wait for its webhook."""
    job, replayed = await jobs.submit_job(
        tenant_of(request), body, checked_idempotency_key(idempotency_key), authorizer(request)
    )
    return accepted(job, f"/v1/jobs/{job['id']}", replayed)


@router.get("/v1/jobs", response_model=JobList, responses=READ_ERRORS)
async def list_jobs(
    request: Request,
    jobs: Jobs,
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, max_length=40),
    status: JobStatus | None = None,
    batch_id: str | None = Query(None, max_length=40),
):
    """The caller's jobs, newest first; page with `after=<last_id>`."""
    return await jobs.list_jobs(
        tenant_of(request),
        limit=limit,
        after=after,
        status=status,
        batch_id=batch_id,
        base_url=str(request.base_url),
    )


@router.get("/v1/jobs/{job_id}", response_model=JobObject, responses=READ_ERRORS)
async def get_job(request: Request, job_id: str, jobs: Jobs):
    return await jobs.read_job(tenant_of(request), job_id, str(request.base_url))


# A reconnecting EventSource waits this long (ms) before it tries again.
RECONNECT_MS = 1000
# Empty: no event yet (what a client that saw none may send).
LAST_EVENT_ID = re.compile(r"^[0-9]{0,12}$")


def _last_event_id(value: str | None) -> int | None:
    if value is None:
        return None
    if not LAST_EVENT_ID.fullmatch(value):
        raise InvalidRequestError(
            "Last-Event-ID must be the id of an event this stream sent",
            code=ErrorCode.INVALID_PARAMETER,
            param="Last-Event-ID",
        )
    return int(value) if value else None


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        **error_responses(400, 404),
        200: {
            "description": "Server-sent events until the job ends (or the stream's time is up: "
            "reconnect with Last-Event-ID). `status` (queued, running, succeeded, failed, "
            "canceled; the last carries the job object), `progress` ({step, total}), "
            "`preview` (with previews=true: b64_json of a partial image), each with an `id`; "
            "and `queue` ({queue_position}) without one.",
            "content": {MEDIA_TYPE: {"schema": SSE_SCHEMA}},
        },
    },
)
async def job_events(
    request: Request,
    job_id: str,
    jobs: Jobs,
    previews: bool = Query(False, description="Also send the job's partial images."),
    after: int = Query(0, ge=0, le=10**12, description="Send only events after this id."),
    # Typed `str` (not optional) so the schema says a header, when sent, is digits.
    last_event_id: str = Header(  # type: ignore[assignment]
        None,
        alias="Last-Event-ID",
        description="What a reconnecting EventSource sends: resume after that event.",
        json_schema_extra={"pattern": LAST_EVENT_ID.pattern},
    ),
) -> StreamingResponse:
    """Watch a job without polling: status changes, step progress, queue position and,
    when asked, previews, as server-sent events."""
    resume = _last_event_id(last_event_id)
    job = await jobs.find_job(tenant_of(request), job_id)
    config = jobs.config
    deadline = config.gateway.timeout_for(route_path(request.scope))
    stream_s = min(config.jobs.event_stream_s, deadline - 5)
    events = jobs.job_events(
        job,
        after=max(after, resume or 0),
        previews=previews,
        base_url=str(request.base_url),
        stream_s=max(1.0, stream_s),
    )
    return StreamingResponse(_event_stream(events), media_type=MEDIA_TYPE, headers=SSE_HEADERS)


async def _event_stream(events: AsyncIterator) -> AsyncIterator[bytes]:
    # The reconnection delay rides on the first event (a block of its own would be an
    # empty event to some clients).
    retry = f"retry: {RECONNECT_MS}\n".encode()
    async for event in events:
        if event is None:
            yield b": keep-alive\n\n"
            continue
        data = json.dumps(event.data, separators=(",", ":"))
        yield retry + sse(data, event=event.kind, event_id=event.id)
        retry = b""


@router.delete("/v1/jobs/{job_id}", response_model=JobObject, responses=error_responses(404, 409))
async def cancel_job(request: Request, job_id: str, jobs: Jobs):
    """Cancel a queued or running job; its images, if any were made, are not kept."""
    return await jobs.cancel_job(tenant_of(request), job_id, str(request.base_url))


@router.post(
    "/v1/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobObject,
    responses=error_responses(400, 403, 404, 409),
)
async def retry_job(request: Request, job_id: str, jobs: Jobs) -> JSONResponse:
    """Queue a failed or canceled job again, as a new job with the same request and seed."""
    job = await jobs.retry_job(tenant_of(request), job_id, authorizer(request))
    return accepted(job, f"/v1/jobs/{job['id']}", replayed=False)


@router.post("/v1/batches", status_code=202, response_model=BatchObject, responses=SUBMIT_ERRORS)
async def create_batch(
    request: Request,
    body: BatchCreateRequest,
    jobs: Jobs,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Queue many jobs at once (all are checked first: one bad job refuses the batch)."""
    batch, replayed = await jobs.submit_batch(
        tenant_of(request), body, checked_idempotency_key(idempotency_key), authorizer(request)
    )
    return accepted(batch, f"/v1/batches/{batch['id']}", replayed)


@router.get("/v1/batches/{batch_id}", response_model=BatchObject, responses=READ_ERRORS)
async def get_batch(request: Request, batch_id: str, jobs: Jobs):
    return await jobs.read_batch(tenant_of(request), batch_id)
