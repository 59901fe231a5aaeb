"""The Gateway's FastAPI app: the routers, the middleware and the error envelope around
the Gateway's parts, and the factory that makes those parts from a config."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from serve_app import environment
from serve_app.api.dependencies import DeploymentReplicas, GatewayParts
from serve_app.api.errors import COMMON_ERRORS, error_responses, install_error_handlers
from serve_app.api.middleware import install_middleware
from serve_app.api.openapi import install_openapi
from serve_app.api.routes import catalog, chat, files, health, images, jobs
from serve_app.api.routes.console import install_pages
from serve_app.config import AppConfig
from serve_app.jobs.store import JobStore
from serve_app.observability.access_log import AccessLog
from serve_app.observability.metrics import ServiceMetrics
from serve_app.security.guard import build_guard
from serve_app.service.backends import ModelBackend, PromptBackend
from serve_app.service.catalog import Catalog
from serve_app.service.chat import ChatService
from serve_app.service.images import open_image_service
from serve_app.service.jobs import JobService
from serve_app.service.readiness import Dependency

logger = logging.getLogger(__name__)


def create_app(parts: GatewayParts) -> FastAPI:
    app = FastAPI(
        title="Image serving API",
        version="1",
        description="Generate, edit and understand images, OpenAI-compatible, with "
        "templates, style presets and brand guides; durable jobs with signed webhooks.",
        # Our own /docs serves Swagger UI's files from the package (FastAPI's loads a CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.parts = parts
    common = error_responses(*COMMON_ERRORS)
    routers = (images.router, chat.router, catalog.router, health.router, files.router, jobs.router)
    for router in routers:
        app.include_router(router, responses=common)
    install_pages(app, parts.images.config)
    install_error_handlers(app)
    install_middleware(
        app, parts.images.config, parts.guard, parts.images.metrics, parts.access_log
    )
    install_openapi(
        app,
        webhooks_enabled=parts.jobs.webhooks_enabled,
        keys_required=parts.images.config.auth.enabled,
    )
    return app


def gateway_parts(
    config: AppConfig,
    prompts: PromptBackend,
    models: dict[str, ModelBackend],
    *,
    metrics: ServiceMetrics | None = None,
    access_logger: logging.Logger | None = None,
    access_log_extra_key: str = "access",
    deployment_replicas: DeploymentReplicas | None = None,
) -> GatewayParts:
    """Everything a Gateway replica holds: it opens the job store (creating its tables),
    the key store and the rate limiter the config names. Blocking: run it off the loop."""
    images = open_image_service(config, prompts, models, metrics)
    chat = ChatService(config, models, images.image_inputs)  # type: ignore[arg-type]
    store = JobStore(environment.job_store_url(config.jobs.store_url))
    store.create_schema()
    # Webhooks off in the config: callbacks are refused (the runner still delivers those
    # accepted before, with the secrets it has).
    secrets = environment.webhook_secrets() if config.jobs.webhooks.enabled else []
    jobs = JobService(images, store, secrets, chat=chat)
    observability = config.observability
    access_log = None
    if observability.access_log and access_logger is not None:
        access_log = AccessLog(
            access_logger,
            extra_key=access_log_extra_key,
            prompt_chars=observability.access_log_prompt_chars,
        )
    limits = config.rate_limits
    logger.info(
        "API keys %s; rate limits %s",
        "on" if config.auth.enabled else "off",
        ("shared via Redis" if environment.redis_url(limits.redis_url) else "in this replica only")
        if limits.enabled
        else "off",
    )
    guard = build_guard(config, metrics)
    dependencies = (
        Dependency("job_store", lambda: asyncio.to_thread(store.ping), required=True),
        *(Dependency(*check) for check in guard.dependency_checks()),
    )
    return GatewayParts(
        images=images,
        chat=chat,
        catalog=Catalog(config, prompts, models),
        guard=guard,
        jobs=jobs,
        access_log=access_log,
        dependencies=dependencies,
        deployment_replicas=deployment_replicas,
    )
