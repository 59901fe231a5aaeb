"""Server-sent events as the OpenAI SDK and browsers' EventSource read them: one place
for the framing, the headers, and an error that comes after the status line has gone."""

from __future__ import annotations

import json

from fastapi import Request

from serve_app.api.errors import request_id_of
from serve_app.errors import ServiceError
from serve_app.protocol import ErrorBody, ErrorResponse

# No caching, and no buffering in a proxy (nginx honours x-accel-buffering).
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
MEDIA_TYPE = "text/event-stream"
# Documented in OpenAPI for every streaming route: one schema per event.
SSE_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
    },
}


def sse(data: str, *, event: str | None = None, event_id: int | None = None) -> bytes:
    """One event; `data` must be one line (JSON is)."""
    head = ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    if event is not None:
        head += f"event: {event}\n"
    return f"{head}data: {data}\n\n".encode()


def error_event(request: Request, error: ServiceError, *, typed: bool = False) -> bytes:
    """The error envelope as an event (`event: error`); `typed` adds `"type": "error"`,
    as OpenAI's image streams carry it."""
    body = ErrorResponse(
        error=ErrorBody(
            message=error.message,
            type=error.error_type,
            param=error.param,
            code=error.code,
            request_id=request_id_of(request),
        )
    ).model_dump()
    if typed:
        body = {"type": "error", **body}
    return sse(json.dumps(body, separators=(",", ":")), event="error" if typed else None)
