"""ASGI plumbing for the door and the deadline: plain ASGI middleware, so nothing reads
the body before a request is let in, and the quota slot is given back however the
request ends (answered, failed, timed out or cancelled by a client disconnect)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.api.errors import service_error_response
from serve_app.config import GatewayConfig
from serve_app.errors import GatewayTimeoutError, ServiceError
from serve_app.security.guard import Guard, Refusal
from serve_app.security.scopes import required_access, route_path


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _answer(scope: Scope, receive: Receive, send: Send, error: ServiceError, headers):
    response = service_error_response(Request(scope), error, headers)
    await response(scope, receive, send)


class SecurityMiddleware:
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
            return await _answer(scope, receive, send, refusal.error, refusal.headers)
        if granted is None:
            return await self.app(scope, receive, send)
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
            await _answer(
                scope,
                receive,
                send,
                GatewayTimeoutError(
                    f"the request did not finish within {seconds:g} s", code="request_timeout"
                ),
                None,
            )
