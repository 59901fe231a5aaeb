from serve_app.prompts.catalog import (
    PromptCatalog,
    PromptRequest,
    RenderedPrompt,
    catalog_listing,
)
from serve_app.prompts.engine import render_template, template_fields

__all__ = [
    "PromptCatalog",
    "catalog_listing",
    "PromptRequest",
    "RenderedPrompt",
    "render_template",
    "template_fields",
]
