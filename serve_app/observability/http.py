"""The Gateway's request observer: after each request, one access-log entry and, for
answers >= 400, an error count by route, status and code."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request

from serve_app.api.tenancy import tenant_of
from serve_app.observability.access_log import AccessLog, RequestNotes
from serve_app.observability.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

UNMATCHED_ROUTE = "unmatched"


def request_notes(request: Request) -> RequestNotes:
    """The notes the observer reads after the request; a loose one when none is installed."""
    notes = getattr(request.state, "access_notes", None)
    if notes is None:
        notes = request.state.access_notes = RequestNotes()
    return notes


def route_template(request: Request) -> str | None:
    """`/v1/models/{model_id}`, not the id: labels stay few and ids stay out of metrics."""
    return getattr(request.scope.get("route"), "path", None)


def install_request_observer(
    app: FastAPI, access_log: AccessLog | None, metrics: ServiceMetrics
) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next):
        request.state.access_notes = RequestNotes()
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            # Starlette's outermost handler turns this into the 500 envelope.
            _finish(request, started, 500, "internal_error", access_log, metrics)
            raise
        code = getattr(request.state, "error_code", None) if response.status_code >= 400 else None
        _finish(request, started, response.status_code, code, access_log, metrics)
        return response


def _finish(
    request: Request,
    started: float,
    status: int,
    code: str | None,
    access_log: AccessLog | None,
    metrics: ServiceMetrics,
) -> None:
    template = route_template(request)
    if status >= 400:
        metrics.request_error(template or UNMATCHED_ROUTE, status, code)
    if access_log is None:
        return
    try:
        entry = access_log.entry(
            request_id=getattr(request.state, "request_id", None),
            tenant=tenant_of(request),
            method=request.method,
            route=template or request.url.path,
            status=status,
            latency_ms=(time.perf_counter() - started) * 1000,
            notes=request_notes(request),
            error_code=code,
        )
        access_log.emit(entry)
    except Exception:  # a log line is never worth a failed request
        logger.exception("access log entry failed")
