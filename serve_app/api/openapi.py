"""The OpenAPI document, made to say what this deployment accepts and answers: the edit
route's two body forms (read by hand, so FastAPI cannot see them), a malformed request as
the 400 envelope it gets (FastAPI would document a 422 of its own shape), the bearer key
where keys are on, and no `callback_url` where webhooks are off (such a request is
refused)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serve_app.api.errors import ERROR_DESCRIPTIONS
from serve_app.protocol import MAX_IMAGES, ImageEditRequest
from serve_app.security.scopes import PUBLIC, required_access

SCHEMAS = "#/components/schemas/"
BINARY = {"type": "string", "format": "binary"}
# The multipart form's files; every other form field is the JSON body's scalar of that name.
FORM_FILES = {
    "image": {**BINARY, "description": "The image to edit (or use `image[]`)."},
    "image[]": {
        "type": "array",
        "items": BINARY,
        "maxItems": MAX_IMAGES,
        "description": "Images, for models that take several (see /v1/models).",
    },
    "mask": {**BINARY, "description": "Transparent where the edit may change the image."},
}
CALLBACK_SCHEMAS = (
    "ImageGenerationJobCreate",
    "ImageEditJobCreate",
    "ChatJobCreate",
    "BatchCreateRequest",
)


def install_openapi(app: FastAPI, *, webhooks_enabled: bool, keys_required: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _describe_edit_bodies(schema)
            if keys_required:
                _declare_api_keys(schema)
            _validation_errors_are_400(schema)
            if not webhooks_enabled:
                _without_callbacks(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare_api_keys(schema: dict[str, Any]) -> None:
    """A bearer scheme on every route that takes a key, so /docs offers "Authorize" and
    generated clients send `Authorization: Bearer <key>`. Not declared where keys are off
    (anonymous on 127.0.0.1): there the routes take none."""
    schema.setdefault("components", {})["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `image-service-keys create` "
            "(or send it in the `x-api-key` header).",
        }
    }
    for path, operations in schema["paths"].items():
        if required_access(path) == PUBLIC:
            continue
        for operation in operations.values():
            operation["security"] = [{"apiKey": []}]


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
    """The OpenAI SDK's form: the JSON body's scalar fields, and the image as the file
    `image`, or several as `image[]`."""
    fields = {
        name: _not_null(field)
        for name, field in json_schema["properties"].items()
        if name not in ("images", "mask")
    }
    return {
        "type": "object",
        "properties": {**fields, **FORM_FILES},
        "required": [name for name in json_schema.get("required", []) if name in fields],
        "anyOf": [{"required": ["image"]}, {"required": ["image[]"]}],
        "additionalProperties": False,
    }


def _not_null(field: dict[str, Any]) -> dict[str, Any]:
    """A form field has no null: an optional field is one left out."""
    field = copy.deepcopy(field)
    options = [option for option in field.pop("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        field.update(options[0])
    elif options:
        field["anyOf"] = options
    if field.get("default", "") is None:
        del field["default"]
    return field


def _validation_errors_are_400(schema: dict[str, Any]) -> None:
    """Every operation that validates its input answers a malformed one with the 400
    envelope; FastAPI's 422 `HTTPValidationError` is never sent."""
    envelope = {
        "description": ERROR_DESCRIPTIONS[400],
        "content": {"application/json": {"schema": {"$ref": SCHEMAS + "ErrorResponse"}}},
    }
    for path in schema["paths"].values():
        for operation in path.values():
            responses = operation.get("responses", {})
            fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
            if fastapi_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("400", envelope)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _without_callbacks(schema: dict[str, Any]) -> None:
    components = schema.get("components", {}).get("schemas", {})
    for name in CALLBACK_SCHEMAS:
        if name in components:
            components[name].get("properties", {}).pop("callback_url", None)
