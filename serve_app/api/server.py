"""The FastAPI app: routes, middleware and error handlers around a GatewayService."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.cors import CORSMiddleware

from serve_app.api.errors import error_response, install_error_handlers
from serve_app.api.image_inputs import ImageSource
from serve_app.api.jobs_routes import add_job_routes
from serve_app.api.protocol import (
    ErrorResponse,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    ModelList,
)
from serve_app.api.serving import GatewayService
from serve_app.api.tenancy import authorize_model, may_use_model
from serve_app.config import CorsConfig, GatewayConfig
from serve_app.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from serve_app.jobs.service import JobService
from serve_app.observability.access_log import AccessLog, note_request, note_result
from serve_app.observability.http import install_request_observer, request_notes
from serve_app.security.guard import Guard
from serve_app.security.middleware import DeadlineMiddleware, SecurityMiddleware
from serve_app.security.scopes import route_path
from serve_app.storage import LocalStorage
from serve_app.storage.keys import content_type

# Enough for the largest multi-image model plus a mask, and every OpenAI form field.
MAX_FORM_FILES = 8
MAX_FORM_FIELDS = 40


# Routes whose bodies carry images get the larger upload limit (jobs carry edit requests).
UPLOAD_ROUTES = frozenset({"/v1/images/edits", "/v1/jobs", "/v1/batches"})
IMAGE_FIELD = re.compile(r"^image(\[\d{0,2}\])?$")


def body_limit(config: GatewayConfig, path: str) -> int:
    return config.max_upload_bytes if path in UPLOAD_ROUTES else config.max_request_bytes


# What browsers may read from answers: limits, retry hints and the request id.
CORS_EXPOSED_HEADERS = ["Retry-After", "RateLimit", "RateLimit-Policy", "x-request-id"]


def add_cors(app: FastAPI, cors: CorsConfig) -> None:
    """Outermost, so preflights are answered before any key is asked for."""
    if not cors.allow_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors.allow_origins,
        allow_credentials=cors.allow_credentials,
        allow_methods=cors.allow_methods,
        allow_headers=cors.allow_headers,
        expose_headers=CORS_EXPOSED_HEADERS,
        max_age=cors.max_age_s,
    )


class BodyLimitMiddleware:
    """Counts body bytes as they arrive, for bodies sent without a Content-Length."""

    def __init__(self, app, config: GatewayConfig):
        self.app = app
        self.config = config

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = body_limit(self.config, route_path(scope))
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLargeError(
                        f"request body over {max_bytes} bytes", code="body_too_large"
                    )
            return message

        await self.app(scope, limited_receive, send)


REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 404, 413, 503)
}


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_body(model: type[ModelT], raw: bytes | dict[str, Any]) -> ModelT:
    """Validate a body read by hand; errors take the same path as FastAPI's own."""
    try:
        if isinstance(raw, bytes):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None


async def read_edit_form(
    request: Request, max_image_bytes: int
) -> tuple[ImageEditRequest, list[ImageSource], ImageSource | None]:
    """The OpenAI SDK's multipart edit: files `image`, `image[]` (or `image[i]`), `mask`."""
    # The context closes spooled upload files, also when a field is refused.
    async with request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS) as form:
        fields: dict[str, str] = {}
        uploads: list[ImageSource] = []
        mask: ImageSource | None = None
        for key, value in form.multi_items():
            if isinstance(value, StarletteUploadFile):
                # One byte over the image cap is enough for the decoder to answer 413.
                data = await value.read(max_image_bytes + 1)
                if IMAGE_FIELD.fullmatch(key):
                    uploads.append(ImageSource(f"image[{len(uploads)}]", upload=data))
                elif key == "mask" and mask is None:
                    mask = ImageSource("mask", upload=data)
                else:
                    raise InvalidRequestError(
                        f"unexpected file field {key[:40]!r}",
                        code="invalid_file_field",
                        param=key[:40],
                    )
            elif key in fields or IMAGE_FIELD.fullmatch(key) or key == "mask":
                raise InvalidRequestError(
                    f"field {key[:40]!r} must be given once, and images as files",
                    code="invalid_form_field",
                    param=key[:40],
                )
            else:
                fields[key] = value
    return parse_body(ImageEditRequest, fields), uploads, mask


def create_app(
    service: GatewayService,
    guard: Guard,
    replica_counts: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    jobs: JobService | None = None,
    access_log: AccessLog | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Image serving API",
        version="1",
        description="Generate images from text, OpenAI-compatible, with templates, "
        "style presets and brand guides.",
    )
    install_error_handlers(app)
    gateway_config = service.config.gateway

    async def request_context(request: Request, call_next):
        given = request.headers.get("x-request-id", "")
        request.state.request_id = (
            given if REQUEST_ID.fullmatch(given) else ("req_" + secrets.token_hex(12))
        )
        declared = request.headers.get("content-length")
        max_body = body_limit(gateway_config, route_path(request.scope))
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            response = error_response(
                request, 413, f"request body over {max_body} bytes", code="body_too_large"
            )
        else:
            response = await call_next(request)
        if not given:  # behind Serve's proxy, the proxy sets and echoes the id itself
            response.headers["x-request-id"] = request.state.request_id
        return response

    @app.post(
        "/v1/images/generations",
        response_model=ImagesResponse,
        responses=ERROR_RESPONSES,
        tags=["images"],
    )
    async def create_image(request: Request, body: ImageGenerationRequest) -> JSONResponse:
        notes = request_notes(request)
        note_request(notes, model=body.model, prompt=body.prompt)
        authorize_model(request, service.resolve_model(body.model, task="text-to-image").name)
        response, result = await service.generate_images(body, str(request.base_url))
        note_result(notes, response.model, result)
        return JSONResponse(
            response.model_dump(exclude_none=True),
            headers={"x-batch-images": str(result.batch_images)},
        )

    @app.post(
        "/v1/images/edits",
        response_model=ImagesResponse,
        responses={**ERROR_RESPONSES, 415: {"model": ErrorResponse}},
        tags=["images"],
        description="Edit images by instruction. Send multipart/form-data as the OpenAI SDK "
        "does (files `image` or `image[]`, optional `mask`, and the other fields as form "
        "fields), or JSON: an ImageEditRequest with `images: [{image_url}]` (https or data "
        "URLs) or `[{b64_json}]`.",
    )
    async def edit_image(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            body, uploads, mask = await read_edit_form(request, service.config.images.max_bytes)
        elif content_type == "application/json":
            body = parse_body(ImageEditRequest, await request.body())
            uploads, mask = [], None
        else:
            raise UnsupportedMediaTypeError(
                "send multipart/form-data or application/json", code="unsupported_media_type"
            )
        notes = request_notes(request)
        note_request(notes, model=body.model, prompt=body.prompt)
        authorize_model(request, service.resolve_model(body.model, task="image-edit").name)
        response, result = await service.edit_images(body, uploads, mask, str(request.base_url))
        note_result(notes, response.model, result)
        return JSONResponse(
            response.model_dump(exclude_none=True),
            headers={"x-batch-images": str(result.batch_images)},
        )

    @app.get("/v1/models", response_model=ModelList, tags=["catalog"])
    async def list_models(request: Request) -> ModelList:
        # A key limited to some models sees only those.
        listing = service.list_models()
        return ModelList(data=[c for c in listing.data if may_use_model(request, c.id)])

    @app.get("/v1/models/{model_id}", tags=["catalog"], responses=ERROR_RESPONSES)
    async def get_model(request: Request, model_id: str):
        card = next((c for c in service.list_models().data if c.id == model_id), None)
        if card is None:
            service.resolve_model(model_id)  # raises model_not_found
        authorize_model(request, model_id)
        return card

    @app.get("/v1/templates", tags=["catalog"])
    async def list_templates() -> dict[str, Any]:
        listing = await service.prompts.listing()
        return {"object": "list", "data": listing["templates"]}

    @app.get("/v1/styles", tags=["catalog"])
    async def list_styles() -> dict[str, Any]:
        listing = await service.prompts.listing()
        return {"object": "list", "data": listing["styles"], "brands": listing["brands"]}

    @app.get("/v1/health", tags=["operations"])
    async def health() -> JSONResponse:
        report = await service.health()
        if replica_counts is not None:
            report["replicas"] = await replica_counts()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    @app.get("/files/{key:path}", tags=["files"], responses=ERROR_RESPONSES)
    async def get_file(
        request: Request, key: str, expires: int = Query(...), sig: str = Query(..., max_length=128)
    ):
        storage = service.storage
        if not isinstance(storage, LocalStorage):  # other backends hand out their own URLs
            return error_response(request, 404, "no such file", code="file_not_found")
        if not storage.signer.verify(key, expires, sig):
            return error_response(
                request,
                403,
                "the link is invalid or has expired",
                error_type="permission_error",
                code="invalid_signature",
            )
        path = storage.path_for(key)
        if path is None:
            return error_response(request, 404, "no such file", code="file_not_found")
        return FileResponse(
            path,
            media_type=content_type(key),
            headers={
                "Cache-Control": f"private, max-age={storage.signer.ttl_s}",
                "X-Content-Type-Options": "nosniff",
            },
        )

    if jobs is not None:
        add_job_routes(app, jobs)
    # Innermost first: each add wraps the ones before it.
    app.add_middleware(BodyLimitMiddleware, config=gateway_config)
    app.add_middleware(SecurityMiddleware, guard=guard, gateway=gateway_config)
    app.add_middleware(DeadlineMiddleware, gateway=gateway_config)
    # Around the key check and deadlines, so 401/403/429/504 are logged and counted too;
    # inside request_context, so it sees the request id.
    install_request_observer(app, access_log, service.metrics)
    app.add_middleware(BaseHTTPMiddleware, dispatch=request_context)
    add_cors(app, service.config.cors)
    return app
