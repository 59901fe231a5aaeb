"""What the routes are served from: the Gateway's parts, kept on the app and handed to each
route by FastAPI's dependency injection (nothing here is a global)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from serve_app.observability.access_log import AccessLog
from serve_app.security.guard import Guard
from serve_app.service.catalog import Catalog
from serve_app.service.chat import ChatService
from serve_app.service.images import ImageService
from serve_app.service.jobs import JobService
from serve_app.service.readiness import Dependency, ReplicaCount

# This application's deployments as the Serve controller sees them (None: it did not answer).
DeploymentReplicas = Callable[[], Awaitable[dict[str, ReplicaCount] | None]]


@dataclass(frozen=True)
class GatewayParts:
    images: ImageService
    chat: ChatService
    catalog: Catalog
    guard: Guard
    jobs: JobService
    access_log: AccessLog | None = None
    # What readiness checks: the stores and Redis the Gateway uses, and (only under Ray
    # Serve) the deployments' replicas.
    dependencies: tuple[Dependency, ...] = ()
    deployment_replicas: DeploymentReplicas | None = None


def gateway_parts(request: Request) -> GatewayParts:
    return request.app.state.parts


def image_service(request: Request) -> ImageService:
    return gateway_parts(request).images


def chat_service(request: Request) -> ChatService:
    return gateway_parts(request).chat


def catalog(request: Request) -> Catalog:
    return gateway_parts(request).catalog


def job_service(request: Request) -> JobService:
    return gateway_parts(request).jobs


Images = Annotated[ImageService, Depends(image_service)]
Chat = Annotated[ChatService, Depends(chat_service)]
CatalogDep = Annotated[Catalog, Depends(catalog)]
Jobs = Annotated[JobService, Depends(job_service)]
Parts = Annotated[GatewayParts, Depends(gateway_parts)]
