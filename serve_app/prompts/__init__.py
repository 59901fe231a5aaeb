from serve_app.prompts.catalog import (
    PromptCatalog,
    PromptRequest,
    RenderedPrompt,
    catalog_listing,
    check_prompt_request,
)
from serve_app.prompts.engine import render_template, template_fields

__all__ = [
    "PromptCatalog",
    "catalog_listing",
    "check_prompt_request",
    "PromptRequest",
    "RenderedPrompt",
    "render_template",
    "template_fields",
]
