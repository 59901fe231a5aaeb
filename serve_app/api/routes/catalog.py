"""What a client can choose from, and whether the service is up: models, templates,
styles and brands (for OA/CMS drop-downs), health."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve_app.api.dependencies import CatalogDep, Images, Parts
from serve_app.api.errors import error_responses
from serve_app.api.tenancy import authorize_model, may_use_model
from serve_app.protocol import (
    HealthReport,
    ModelCard,
    ModelList,
    StyleList,
    TemplateList,
)
from serve_app.service.catalog import model_card

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, tags=["catalog"])
async def list_models(request: Request, catalog: CatalogDep) -> ModelList:
    # A key limited to some models sees only those.
    listing = catalog.model_list()
    return ModelList(data=[card for card in listing.data if may_use_model(request, card.id)])


@router.get(
    "/v1/models/{model_id}",
    response_model=ModelCard,
    tags=["catalog"],
    responses=error_responses(404),
)
async def get_model(request: Request, model_id: str, images: Images) -> ModelCard:
    model = images.resolve_model(model_id)
    authorize_model(request, model.name)
    return model_card(model)


@router.get("/v1/templates", response_model=TemplateList, tags=["catalog"])
async def list_templates(catalog: CatalogDep) -> TemplateList:
    return TemplateList(data=await catalog.templates())


@router.get("/v1/styles", response_model=StyleList, tags=["catalog"])
async def list_styles(catalog: CatalogDep) -> StyleList:
    styles, brands = await catalog.styles()
    return StyleList(data=styles, brands=brands)


@router.get(
    "/v1/health",
    response_model=HealthReport,
    tags=["operations"],
    responses={503: {"model": HealthReport, "description": "A model does not answer."}},
)
async def health(parts: Parts) -> JSONResponse:
    report = await parts.catalog.health()
    if parts.replica_counts is not None:
        report["replicas"] = await parts.replica_counts()
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)
