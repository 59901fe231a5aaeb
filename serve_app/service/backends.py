"""What the image service needs from the other deployments.

Under Ray Serve these are handle adapters (serve_app/ray_adapter.py); tests may pass the
same serve_app objects running in-process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from serve_app.models.chat_spec import ChatDeltas, ChatResult, ChatSpec
from serve_app.models.spec import (
    EditSpec,
    GenerationResult,
    GenerationSpec,
    PartialImage,
    StreamAccepted,
)
from serve_app.prompts import PromptCatalog, PromptRequest, RenderedPrompt, catalog_listing


class PromptBackend(Protocol):
    async def render(self, request: PromptRequest) -> RenderedPrompt: ...

    async def listing(self) -> dict[str, list[dict[str, Any]]]: ...


class ModelBackend(Protocol):
    """A text-to-image or edit model: whole answers, or streamed ones (accepted, previews,
    then the result). Closing a stream abandons its request."""

    async def run(self, spec: GenerationSpec | EditSpec) -> GenerationResult: ...

    def stream(
        self, spec: GenerationSpec | EditSpec
    ) -> AsyncIterator[StreamAccepted | PartialImage | GenerationResult]: ...

    async def health(self) -> dict[str, Any]: ...


class ChatBackend(Protocol):
    """A vision-chat model: whole answers, or streamed ones (deltas, then the result)."""

    async def run(self, spec: ChatSpec) -> ChatResult: ...

    def stream(self, spec: ChatSpec) -> AsyncIterator[ChatDeltas | ChatResult]: ...

    async def health(self) -> dict[str, Any]: ...


class CatalogPrompts:
    """A PromptBackend over a catalog in this process: what the PromptTemplater does,
    without Ray (tests, and the benchmark that measures the app alone)."""

    def __init__(self, catalog: PromptCatalog):
        self.catalog = catalog

    async def render(self, request: PromptRequest) -> RenderedPrompt:
        return self.catalog.render(request)

    async def listing(self) -> dict[str, list[dict[str, Any]]]:
        return catalog_listing(self.catalog)
