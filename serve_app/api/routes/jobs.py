"""/v1/jobs and /v1/batches: durable jobs, scoped to the caller's tenant."""

from __future__ import annotations

import re

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from serve_app.api.dependencies import Jobs
from serve_app.api.errors import error_responses
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


@router.delete("/v1/jobs/{job_id}", response_model=JobObject, responses=error_responses(404, 409))
async def cancel_job(request: Request, job_id: str, jobs: Jobs):
    """Cancel a queued or running job; its images, if any were made, are not kept."""
    return await jobs.cancel_job(tenant_of(request), job_id, str(request.base_url))


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
