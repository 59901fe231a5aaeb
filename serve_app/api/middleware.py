"""Everything that wraps every route, outermost first:

    CORS            answers preflights before any key is asked for
    request context the request id, and a declared body over the route's limit (413)
    observer        one access-log entry and, for >= 400, an error count per request
    deadline        the request's overall deadline (504 in the envelope)
    door            API key, scope and tenant quotas (security.guard), RateLimit headers
    body limit      counts body bytes as they arrive, for bodies without a length

Plain ASGI where the body or the answer's headers are touched, so nothing reads a body
before its request is let in, and a quota slot is given back however the request ends.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.api.errors import error_response, service_error_response
from serve_app.api.tenancy import tenant_of
from serve_app.config import AppConfig, GatewayConfig
from serve_app.errors import ErrorCode, GatewayTimeoutError, PayloadTooLargeError, ServiceError
from serve_app.observability.access_log import AccessLog, RequestNotes
from serve_app.observability.metrics import ServiceMetrics
from serve_app.security.guard import Guard, Refusal
from serve_app.security.scopes import required_access, route_path

logger = logging.getLogger(__name__)

# Routes whose bodies carry images get the larger upload limit (jobs carry edit requests).
UPLOAD_ROUTES = frozenset(
    {
        "/v1/images/edits",
        "/v1/chat/completions",
        "/v1/multimodal/completions",
        "/v1/multimodal/completions-multipart",
        "/v1/jobs",
        "/v1/batches",
    }
)
# What browsers may read from answers: limits, retry hints and the request id.
CORS_EXPOSED_HEADERS = ["Retry-After", "RateLimit", "RateLimit-Policy", "x-request-id"]
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
UNMATCHED_ROUTE = "unmatched"


def install_middleware(
    app: FastAPI,
    config: AppConfig,
    guard: Guard,
    metrics: ServiceMetrics,
    access_log: AccessLog | None,
) -> None:
    """Each add wraps the ones before it: innermost first."""
    app.add_middleware(BodyLimitMiddleware, gateway=config.gateway)
    app.add_middleware(DoorMiddleware, guard=guard, gateway=config.gateway)
    app.add_middleware(DeadlineMiddleware, gateway=config.gateway)
    # Around the door and the deadline, so 401/403/429/504 are logged and counted too;
    # inside the request context, so it sees the request id.
    app.add_middleware(BaseHTTPMiddleware, dispatch=RequestObserver(access_log, metrics))
    app.add_middleware(BaseHTTPMiddleware, dispatch=RequestContext(config.gateway))
    cors = config.cors
    if cors.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors.allow_origins,
            allow_credentials=cors.allow_credentials,
            allow_methods=cors.allow_methods,
            allow_headers=cors.allow_headers,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=cors.max_age_s,
        )


def body_limit(gateway: GatewayConfig, path: str) -> int:
    return gateway.max_upload_bytes if path in UPLOAD_ROUTES else gateway.max_request_bytes


def request_notes(request: Request) -> RequestNotes:
    """The notes the observer reads after the request; a loose one when none is installed."""
    notes = getattr(request.state, "access_notes", None)
    if notes is None:
        notes = request.state.access_notes = RequestNotes()
    return notes


class RequestContext:
    """The request id (the client's, when well formed), and 413 for a declared body over
    the route's limit before any of it is read."""

    def __init__(self, gateway: GatewayConfig):
        self.gateway = gateway

    async def __call__(self, request: Request, call_next):
        given = request.headers.get("x-request-id", "")
        request.state.request_id = (
            given if REQUEST_ID.fullmatch(given) else ("req_" + secrets.token_hex(12))
        )
        declared = request.headers.get("content-length")
        max_body = body_limit(self.gateway, route_path(request.scope))
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            response = error_response(
                request, 413, f"request body over {max_body} bytes", code=ErrorCode.BODY_TOO_LARGE
            )
        else:
            response = await call_next(request)
        if not given:  # behind Serve's proxy, the proxy sets and echoes the id itself
            response.headers["x-request-id"] = request.state.request_id
        return response


class RequestObserver:
    """After each request: one access-log entry and, for answers >= 400, an error count by
    route, status and code."""

    def __init__(self, access_log: AccessLog | None, metrics: ServiceMetrics):
        self.access_log = access_log
        self.metrics = metrics

    async def __call__(self, request: Request, call_next):
        request.state.access_notes = RequestNotes()
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            # Starlette's outermost handler turns this into the 500 envelope.
            self._finish(request, started, 500, ErrorCode.INTERNAL_ERROR)
            raise
        code = getattr(request.state, "error_code", None) if response.status_code >= 400 else None
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            # A stream's line is written when it ends: its tokens or images, and its whole
            # time, are known only then.
            response.body_iterator = self._observed(
                response.body_iterator, request, started, response.status_code
            )
        else:
            self._finish(request, started, response.status_code, code)
        return response

    async def _observed(
        self, body: AsyncIterator[bytes], request: Request, started: float, status: int
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in body:
                yield chunk
        finally:
            self._finish(request, started, status, None)

    def _finish(self, request: Request, started: float, status: int, code: str | None) -> None:
        # `/v1/models/{model_id}`, not the id: labels stay few and ids stay out of metrics.
        template = getattr(request.scope.get("route"), "path", None)
        if status >= 400:
            self.metrics.request_error(template or UNMATCHED_ROUTE, status, code)
        if self.access_log is None:
            return
        try:
            entry = self.access_log.entry(
                request_id=getattr(request.state, "request_id", None),
                tenant=tenant_of(request),
                method=request.method,
                route=template or request.url.path,
                status=status,
                latency_ms=(time.perf_counter() - started) * 1000,
                notes=request_notes(request),
                error_code=code,
            )
            self.access_log.emit(entry)
        except Exception:  # a log line is never worth a failed request
            logger.exception("access log entry failed")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _answer(scope: Scope, receive: Receive, send: Send, error: ServiceError, headers):
    response = service_error_response(Request(scope), error, headers)
    await response(scope, receive, send)


JOB_EVENTS = re.compile(r"^/v1/jobs/[^/]+/events$")


class DoorMiddleware:
    """Authenticates, checks the route's scope and the tenant's quotas, sets
    `request.state.principal`, and adds the RateLimit headers to the response."""

    def __init__(self, app: ASGIApp, guard: Guard, gateway: GatewayConfig):
        self.app = app
        self.guard = guard
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = route_path(scope)
        server = scope.get("server") or (None, None)
        try:
            granted = await self.guard.admit(
                required_access(path), _headers(scope), server[0], self.gateway.timeout_for(path)
            )
        except Refusal as refusal:
            if refusal.principal is not None:  # a valid key, refused: log its tenant
                scope.setdefault("state", {})["principal"] = refusal.principal
            return await _answer(scope, receive, send, refusal.error, refusal.headers)
        if granted is None:
            return await self.app(scope, receive, send)
        if JOB_EVENTS.fullmatch(path):
            # A job's event stream is counted against the rate but holds no in-flight slot
            # while it lasts: a console watching ten jobs must not use up the tenant's
            # concurrency for work.
            await self.guard.release(granted)
            granted.slot = None
        scope.setdefault("state", {})["principal"] = granted.principal
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in granted.headers.items()]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            # Shielded: a cancelled request must still give its slot back.
            await asyncio.shield(self.guard.release(granted))


class DeadlineMiddleware:
    """One overall deadline per request inside the Gateway: 504 in the envelope when it
    passes before the answer starts (the work under it is cancelled)."""

    def __init__(self, app: ASGIApp, gateway: GatewayConfig):
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seconds = self.gateway.timeout_for(route_path(scope))
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(seconds):
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if started:
                raise
            error = GatewayTimeoutError(
                f"the request did not finish within {seconds:g} s", code=ErrorCode.REQUEST_TIMEOUT
            )
            await _answer(scope, receive, send, error, None)


class BodyLimitMiddleware:
    """Counts body bytes as they arrive, for bodies sent without a Content-Length."""

    def __init__(self, app: ASGIApp, gateway: GatewayConfig):
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = body_limit(self.gateway, route_path(scope))
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLargeError(
                        f"request body over {max_bytes} bytes", code=ErrorCode.BODY_TOO_LARGE
                    )
            return message

        await self.app(scope, limited_receive, send)
