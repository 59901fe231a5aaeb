"""Templates, style presets and brand guides, rendered on a CPU replica."""

from __future__ import annotations

from pathlib import Path

from ray import serve

from serve_app.observability.ray_adapter import route_app_logs
from serve_app.prompts import PromptCatalog, PromptRequest, RenderedPrompt, catalog_listing


@serve.deployment(num_replicas=1, max_ongoing_requests=200)
class PromptTemplater:
    def __init__(self, templates_path: str):
        route_app_logs()
        self.catalog = PromptCatalog.from_yaml(Path(templates_path))

    def render(self, request: PromptRequest) -> RenderedPrompt:
        return self.catalog.render(request)

    def listing(self) -> dict[str, list[dict]]:
        return catalog_listing(self.catalog)
