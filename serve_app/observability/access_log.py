"""One structured access-log entry per Gateway request.

What goes in is chosen field by field: ids, tenant, route, model, status, latency, the
results' SHA-256 and counts, and the first characters of the prompt. Headers, API keys
and image bytes have no field, so they cannot leak into the log.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

DEFAULT_PROMPT_CHARS = 80
# Unmatched paths are attacker-chosen: keep only a prefix.
MAX_PATH_CHARS = 200


class AccessEntry(BaseModel):
    event: Literal["access"] = "access"
    request_id: str | None
    tenant: str
    method: str
    # The route template (`/v1/models/{model_id}`), or the raw path when no route matched.
    route: str
    model: str | None = None
    status: int
    latency_ms: float
    images: int = 0
    # Images in the pipeline call this request's images came from.
    batch_images: int | None = None
    image_sha256: list[str] = []
    prompt: str | None = None
    error_code: str | None = None
    # Vision chat: tokens in (text and images) and out, time to the first token (from the
    # model call's start), and completion tokens per second of the request.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_ms: float | None = None
    tokens_per_s: float | None = None

    def summary(self) -> str:
        """The human line, for Serve's TEXT log encoding (JSON carries every field)."""
        model = f" model={self.model}" if self.model else ""
        return f"{self.method} {self.route} {self.status} {self.latency_ms:.1f}ms{model}"


@dataclass
class RequestNotes:
    """What a route learns about its request, for the access log written after it."""

    model: str | None = None
    prompt: str | None = None
    image_sha256: list[str] = field(default_factory=list)
    batch_images: int | None = None
    chat: dict[str, float | int | None] = field(default_factory=dict)

    def request(self, *, model: str | None, prompt: str | None) -> None:
        self.model, self.prompt = model, prompt

    def result(self, model: str, images: Iterable[bytes], batch_images: int) -> None:
        """The images answered, by digest only, and the batch they were made in."""
        self.model = model
        self.image_sha256 = [hashlib.sha256(data).hexdigest() for data in images]
        self.batch_images = batch_images

    def chat_result(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        first_token_s: float | None,
        generate_s: float,
        batch_rows: int,
    ) -> None:
        self.model = model
        self.batch_images = batch_rows
        self.chat = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "first_token_ms": None if first_token_s is None else round(first_token_s * 1000, 2),
            "tokens_per_s": round(completion_tokens / generate_s, 2) if generate_s > 0 else None,
        }


def prompt_excerpt(prompt: str | None, limit: int) -> str | None:
    if not prompt or limit <= 0:
        return None
    return prompt if len(prompt) <= limit else prompt[:limit] + "…"


class AccessLog:
    """Writes entries to a logger, as `extra` fields under `extra_key`.

    Under Ray Serve the logger is Serve's replica logger and the key its extra-fields
    key, so with `logging_config: {encoding: JSON}` each entry is one JSON line in the
    Gateway replica's log file, next to Serve's own fields (replica, deployment, ...).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        extra_key: str = "access",
        prompt_chars: int = DEFAULT_PROMPT_CHARS,
    ):
        self.logger = logger
        self.extra_key = extra_key
        self.prompt_chars = prompt_chars

    def entry(
        self,
        *,
        request_id: str | None,
        tenant: str,
        method: str,
        route: str,
        status: int,
        latency_ms: float,
        notes: RequestNotes,
        error_code: str | None,
    ) -> AccessEntry:
        return AccessEntry(
            request_id=request_id,
            tenant=tenant,
            method=method,
            route=route[:MAX_PATH_CHARS],
            model=notes.model,
            status=status,
            latency_ms=round(latency_ms, 2),
            images=len(notes.image_sha256),
            batch_images=notes.batch_images,
            image_sha256=notes.image_sha256,
            prompt=prompt_excerpt(notes.prompt, self.prompt_chars),
            error_code=error_code,
            **notes.chat,
        )

    def emit(self, entry: AccessEntry) -> None:
        self.logger.info(entry.summary(), extra={self.extra_key: entry.model_dump()})
