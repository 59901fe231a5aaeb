"""The pages a person opens in a browser: the console (/console, when `console.enabled`)
and the API reference (/docs). Both are static files shipped in the package, served with
a Content-Security-Policy that lets them load only this service's own scripts and call
only this service, so they work offline and no injected markup can run."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import swagger_ui
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response

from serve_app.config import AppConfig
from serve_app.errors import ErrorCode, NotFoundError

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "console"
SWAGGER_DIR = Path(swagger_ui.__file__).resolve().parent / "static"
# Swagger UI's own files that /docs needs (the package ships its editor too).
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


def shipped_files(folder: Path) -> dict[str, Path]:
    """Every file under `folder` by its relative path: the only names a request can get."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def image_sources(config: AppConfig) -> str:
    """Where result images may load from: data/blob URLs the console makes, this service's
    /files links, and the object store's presigned URLs when images live there."""
    sources = ["'self'", "data:", "blob:"]
    storage = config.storage
    origins = [storage.public_base_url]
    if storage.kind == "s3" and storage.s3 is not None:
        origins.append(storage.s3.endpoint_url or "https://*.amazonaws.com")
    for origin in origins:
        if origin:
            parts = urlsplit(origin)
            sources.append(f"{parts.scheme}://{parts.netloc}")
    return " ".join(sources)


def security_headers(config: AppConfig, *, inline_styles: bool) -> dict[str, str]:
    # Swagger UI sets style attributes from its scripts; the console sets none.
    styles = "'self' 'unsafe-inline'" if inline_styles else "'self'"
    policy = (
        "default-src 'none'; script-src 'self'; connect-src 'self'; "
        f"style-src {styles}; img-src {image_sources(config)}; font-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _file(path: Path | None, headers: dict[str, str]) -> Response:
    if path is None:
        raise NotFoundError("no such file", code=ErrorCode.FILE_NOT_FOUND)
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=headers)


def docs_router(config: AppConfig) -> APIRouter:
    """/docs: Swagger UI from the swagger-ui-py package's files, no CDN."""
    router = APIRouter(include_in_schema=False)
    headers = security_headers(config, inline_styles=True)
    files = {name: SWAGGER_DIR / name for name in SWAGGER_FILES}
    files["docs.js"] = CONSOLE_DIR / "docs.js"

    @router.get("/docs")
    async def docs_page() -> Response:
        return _file(CONSOLE_DIR / "docs.html", headers)

    @router.get("/docs/{name}")
    async def docs_asset(name: str) -> Response:
        return _file(files.get(name), headers)

    return router


def console_router(config: AppConfig) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    headers = security_headers(config, inline_styles=False)
    files = shipped_files(CONSOLE_DIR)

    @router.get("/console")
    async def console_page() -> Response:
        return _file(CONSOLE_DIR / "index.html", headers)

    @router.get("/console/")
    async def console_slash() -> Response:
        # Relative, so it holds under any route prefix.
        return RedirectResponse("../console", status_code=308)

    @router.get("/console/{name:path}")
    async def console_asset(name: str) -> Response:
        return _file(files.get(name), headers)

    return router


def install_pages(app: FastAPI, config: AppConfig) -> None:
    app.include_router(docs_router(config))
    if config.console.enabled:
        app.include_router(console_router(config))
