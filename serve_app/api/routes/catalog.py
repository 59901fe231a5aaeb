"""What a client can choose from: models, templates, styles and brands (for OA/CMS
drop-downs)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from serve_app.api.dependencies import CatalogDep, Images
from serve_app.api.errors import error_responses
from serve_app.api.tenancy import authorize_model, may_use_model
from serve_app.protocol import (
    LoraCard,
    LoraList,
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
    return model_card(model, images.config.loras_for(model.name))


@router.get("/v1/loras", response_model=LoraList, tags=["catalog"])
async def list_loras(request: Request, catalog: CatalogDep) -> LoraList:
    """The LoRA catalog: adapters a request may name in `loras`, each with its models
    (a key limited to some models sees those models' adapters)."""
    listing = catalog.lora_list()
    visible = []
    for card in listing.data:
        models = [name for name in card.models if may_use_model(request, name)]
        if models:
            visible.append(LoraCard(id=card.id, description=card.description, models=models))
    return LoraList(data=visible)


@router.get("/v1/templates", response_model=TemplateList, tags=["catalog"])
async def list_templates(catalog: CatalogDep) -> TemplateList:
    return TemplateList(data=await catalog.templates())


@router.get("/v1/styles", response_model=StyleList, tags=["catalog"])
async def list_styles(catalog: CatalogDep) -> StyleList:
    styles, brands = await catalog.styles()
    return StyleList(data=styles, brands=brands)
