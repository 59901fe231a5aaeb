"""Every non-2xx answer in one envelope: {"error": {message, type, param, code, request_id}}.

No tracebacks, file paths or secrets reach the client; unexpected errors are logged
with the request id and answered with a generic message.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from serve_app.db import is_outage, outage_summary
from serve_app.errors import DatabaseUnavailableError, ErrorCode, ServiceError
from serve_app.protocol import ErrorBody, ErrorResponse, validation_error

logger = logging.getLogger(__name__)

# What each status means to a client, for the OpenAPI document.
ERROR_DESCRIPTIONS = {
    400: "The request is malformed or outside the model's limits.",
    401: "No valid API key.",
    403: "The key lacks the route's scope or the model, or the link is invalid.",
    404: "No such model, job, batch or file.",
    409: "The Idempotency-Key's first request is still running, or the job has ended.",
    413: "The body or an image is too large.",
    415: "The body's content type is not accepted here.",
    422: "The Idempotency-Key was used with another body.",
    429: "The tenant's rate or concurrency limit; see Retry-After.",
    500: "An unexpected error; quote the request_id.",
    503: "A model is at capacity, unavailable or timed out, or a store is down; see Retry-After.",
    504: "The request passed its deadline.",
}
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
# What any route may answer, whatever it does: the door, the deadline and the unexpected.
COMMON_ERRORS = (401, 403, 429, 500, 504)

HTTP_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the envelope's schema."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request.state.error_code = code  # for the access log and the error counter
    body = ErrorResponse(
        error=ErrorBody(
            message=message,
            type=error_type or HTTP_ERROR_TYPES.get(status, "server_error"),
            param=param,
            code=code,
            request_id=request_id_of(request),
        )
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return service_error_response(request, validation_error(list(exc.errors())))


def service_error_response(
    request: Request, exc: ServiceError, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The envelope for a ServiceError; 429 and 503 always say when to retry, and so does
    any other error that sets `retry_after_s` (409 for an Idempotency-Key in use)."""
    headers = dict(headers or {})
    retry_after = getattr(exc, "retry_after_s", None)
    if exc.status_code in (429, 503) or retry_after is not None:
        headers.setdefault("Retry-After", str(retry_after or 1))
    return error_response(
        request,
        exc.status_code,
        exc.message,
        error_type=exc.error_type,
        code=exc.code,
        param=exc.param,
        headers=headers or None,
    )


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return service_error_response(request, exc)


def _service_error_cause(exc: BaseException) -> ServiceError | None:
    seen = 0
    cause = exc.__cause__ or exc.__context__
    while cause is not None and seen < 8:
        if isinstance(cause, ServiceError):
            return cause
        if isinstance(cause, BaseExceptionGroup):
            inner = [e for e in cause.exceptions if isinstance(e, ServiceError)]
            if inner:
                return inner[0]
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    cause = _service_error_cause(exc)
    if cause is not None:
        # FastAPI wraps errors raised while reading the body (e.g. the streamed size cap).
        return await _service_error(request, cause)
    messages = {404: "no such route", 405: "method not allowed"}
    message = exc.detail if isinstance(exc.detail, str) else messages.get(exc.status_code, "error")
    headers = exc.headers
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        # Starlette names only the first route that matched the path; a path served by
        # several routes (GET and POST /v1/jobs) allows the methods of them all.
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return error_response(request, exc.status_code, message, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers on this path (asked through the routes' own matching,
    which also sees into included routers)."""
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("request %s failed", request_id_of(request), exc_info=exc)
    return error_response(
        request,
        500,
        "internal error; quote the request_id when reporting it",
        code=ErrorCode.INTERNAL_ERROR,
    )


async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
    if not is_outage(exc):
        return await _unexpected_error(request, exc)
    # The driver's first line stays in the log (it names the database's address); never
    # the statement's parameters, which hold prompts.
    logger.warning(
        "request %s: the database is unavailable: %s",
        request_id_of(request),
        outage_summary(exc),
    )
    return service_error_response(request, DatabaseUnavailableError())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
