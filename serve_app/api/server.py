"""The FastAPI app: routes, middleware and error handlers around a GatewayService."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from serve_app.api.errors import error_response, install_error_handlers
from serve_app.api.protocol import ErrorResponse, ImageGenerationRequest, ImagesResponse, ModelList
from serve_app.api.serving import GatewayService
from serve_app.errors import PayloadTooLargeError


class BodyLimitMiddleware:
    """Counts body bytes as they arrive, for bodies sent without a Content-Length."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLargeError(
                        f"request body over {self.max_bytes} bytes", code="body_too_large"
                    )
            return message

        await self.app(scope, limited_receive, send)


REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 404, 413, 503)
}


def create_app(
    service: GatewayService, replica_counts: Callable[[], Awaitable[dict[str, Any]]] | None = None
) -> FastAPI:
    app = FastAPI(
        title="Image serving API",
        version="1",
        description="Generate images from text, OpenAI-compatible, with templates, "
        "style presets and brand guides.",
    )
    install_error_handlers(app)
    max_body = service.config.gateway.max_request_bytes

    @app.middleware("http")
    async def request_context(request: Request, call_next):
        given = request.headers.get("x-request-id", "")
        request.state.request_id = (
            given if REQUEST_ID.fullmatch(given) else ("req_" + secrets.token_hex(12))
        )
        declared = request.headers.get("content-length")
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
        response, result = await service.generate_images(body, str(request.base_url))
        return JSONResponse(
            response.model_dump(exclude_none=True),
            headers={"x-batch-images": str(result.batch_images)},
        )

    @app.get("/v1/models", response_model=ModelList, tags=["catalog"])
    async def list_models() -> ModelList:
        return service.list_models()

    @app.get("/v1/models/{model_id}", tags=["catalog"], responses=ERROR_RESPONSES)
    async def get_model(model_id: str):
        card = next((c for c in service.list_models().data if c.id == model_id), None)
        if card is None:
            service.resolve_model(model_id)  # raises model_not_found
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

    @app.get("/files/{key}", tags=["files"], responses=ERROR_RESPONSES)
    async def get_file(
        request: Request, key: str, expires: int = Query(...), sig: str = Query(..., max_length=128)
    ):
        if not service.signer.verify(key, expires, sig):
            return error_response(
                request,
                403,
                "the link is invalid or has expired",
                error_type="permission_error",
                code="invalid_signature",
            )
        path = service.storage.path_for(key)
        if path is None:
            return error_response(request, 404, "no such file", code="file_not_found")
        media_type = "image/" + key.rsplit(".", 1)[1]
        return FileResponse(
            path,
            media_type=media_type,
            headers={
                "Cache-Control": f"private, max-age={service.signer.ttl_s}",
                "X-Content-Type-Options": "nosniff",
            },
        )

    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body)
    return app
