"""The OpenAPI document, made to say what this deployment accepts: the edit route's two
body forms (read by hand, so FastAPI cannot see them), and no `callback_url` where
webhooks are off (such a request is refused)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serve_app.protocol import ImageEditRequest

SCHEMAS = "#/components/schemas/"
BINARY = {"type": "string", "format": "binary"}
# The multipart form's files; every other form field is the JSON body's scalar of that name.
FORM_FILES = {
    "image": {**BINARY, "description": "The image to edit (or use `image[]`)."},
    "image[]": {
        "type": "array",
        "items": BINARY,
        "description": "Images, for models that take several (see /v1/models).",
    },
    "mask": {**BINARY, "description": "Transparent where the edit may change the image."},
}
CALLBACK_SCHEMAS = ("ImageGenerationJobCreate", "ImageEditJobCreate", "BatchCreateRequest")


def install_openapi(app: FastAPI, *, webhooks_enabled: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _describe_edit_bodies(schema)
            if not webhooks_enabled:
                _without_callbacks(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_edit_bodies(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/v1/images/edits"]["post"]
    operation.pop("x-edit-request-body", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    json_schema = ImageEditRequest.model_json_schema(ref_template=SCHEMAS + "{model}")
    for name, definition in json_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault("ImageEditRequest", json_schema)
    operation["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": SCHEMAS + "ImageEditRequest"}},
            "multipart/form-data": {"schema": _edit_form(json_schema)},
        },
    }


def _edit_form(json_schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI SDK's form: the JSON body's scalar fields, images as files."""
    fields = {
        name: copy.deepcopy(field)
        for name, field in json_schema["properties"].items()
        if name not in ("images", "mask")
    }
    return {
        "type": "object",
        "properties": {**fields, **FORM_FILES},
        "required": json_schema.get("required", []),
        "anyOf": [{"required": ["image"]}, {"required": ["image[]"]}],
        "additionalProperties": False,
    }


def _without_callbacks(schema: dict[str, Any]) -> None:
    components = schema.get("components", {}).get("schemas", {})
    for name in CALLBACK_SCHEMAS:
        if name in components:
            components[name].get("properties", {}).pop("callback_url", None)
