"""The Gateway's backends without Ray, for tests that run the FastAPI app in-process."""

from __future__ import annotations

from serve_app.prompts import PromptCatalog, catalog_listing


class CatalogPrompts:
    """The templater's catalog, in-process."""

    def __init__(self, catalog: PromptCatalog):
        self.catalog = catalog

    async def render(self, request):
        return self.catalog.render(request)

    async def listing(self):
        return catalog_listing(self.catalog)
