"""Every non-2xx answer in one envelope: {"error": {message, type, param, code, request_id}}.

No tracebacks, file paths or secrets reach the client; unexpected errors are logged
with the request id and answered with a generic message.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.api.protocol import ErrorBody, ErrorResponse
from serve_app.errors import ServiceError

logger = logging.getLogger(__name__)

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


def _location(loc: tuple) -> str | None:
    parts = [str(part) for part in loc if part != "body"]
    return ".".join(parts) or None


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return error_response(
            request, 400, "the request body is not valid JSON", code="invalid_json"
        )
    param = _location(tuple(first.get("loc", ())))
    message = first.get("msg", "invalid request")
    if first.get("type") == "extra_forbidden":
        message = "unknown parameter"
    elif first.get("type") == "missing":
        message = "missing required parameter"
    return error_response(
        request,
        400,
        f"{param}: {message}" if param else message,
        code="invalid_parameter",
        param=param,
    )


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
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    return error_response(request, exc.status_code, message, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("request %s failed", request_id_of(request), exc_info=exc)
    return error_response(
        request,
        500,
        "internal error; quote the request_id when reporting it",
        code="internal_error",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
