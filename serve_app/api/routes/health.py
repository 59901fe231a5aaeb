"""Whether the service is up, three ways: liveness for a process supervisor, readiness for
a load balancer, the full report for monitors and people (README, Operations)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve_app.api.dependencies import Parts
from serve_app.protocol import HealthReport, LivenessReport, ReadinessReport
from serve_app.service.readiness import readiness

router = APIRouter(tags=["operations"])


@router.get("/v1/health/live", response_model=LivenessReport)
async def live() -> LivenessReport:
    return LivenessReport(status="ok")


async def _readiness(parts: Parts) -> dict:
    replicas = await parts.deployment_replicas() if parts.deployment_replicas else None
    models = [model.name for model in parts.images.config.models]
    return await readiness(parts.dependencies, replicas, models)


@router.get(
    "/v1/health/ready",
    response_model=ReadinessReport,
    responses={503: {"model": ReadinessReport, "description": "Requests would fail."}},
)
async def ready(parts: Parts) -> JSONResponse:
    report = ReadinessReport.model_validate(await _readiness(parts))
    code = 503 if report.status == "unavailable" else 200
    return JSONResponse(report.model_dump(mode="json"), status_code=code)


@router.get(
    "/v1/health",
    response_model=HealthReport,
    responses={503: {"model": HealthReport, "description": "Something is short or down."}},
)
async def health(parts: Parts) -> JSONResponse:
    report = await _readiness(parts)
    probes = await parts.catalog.health()
    report["models"] = probes["models"]
    if report["status"] == "ok" and probes["status"] != "ok":
        report["status"] = "degraded"
    full = HealthReport.model_validate(report)
    return JSONResponse(
        full.model_dump(mode="json"), status_code=200 if full.status == "ok" else 503
    )
