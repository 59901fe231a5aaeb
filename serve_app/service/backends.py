"""What the image service needs from the other deployments.

Under Ray Serve these are handle adapters (serve_app/ray_adapter.py); tests may pass the
same serve_app objects running in-process.
"""

from __future__ import annotations

from typing import Any, Protocol

from serve_app.models.spec import EditSpec, GenerationResult, GenerationSpec
from serve_app.prompts import PromptRequest, RenderedPrompt


class PromptBackend(Protocol):
    async def render(self, request: PromptRequest) -> RenderedPrompt: ...

    async def listing(self) -> dict[str, list[dict[str, Any]]]: ...


class ModelBackend(Protocol):
    async def run(self, spec: GenerationSpec | EditSpec) -> GenerationResult: ...

    async def health(self) -> dict[str, Any]: ...
