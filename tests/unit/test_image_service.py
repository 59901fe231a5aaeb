"""The image service's planning in-process: a request that names no template, style or
brand renders locally (no PromptTemplater round trip) and comes out exactly as the
templater would render it; one that names any of them still goes to the templater."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.config import AppConfig
from serve_app.errors import InvalidRequestError
from serve_app.prompts import PromptCatalog
from serve_app.protocol import ImageGenerationRequest
from serve_app.service.backends import CatalogPrompts
from serve_app.service.images import open_image_service
from tests.helpers import TEMPLATES
from tests.unit.test_engine import tiny_sd


class CountingPrompts(CatalogPrompts):
    def __init__(self, catalog: PromptCatalog):
        super().__init__(catalog)
        self.renders = 0

    async def render(self, request):
        self.renders += 1
        return await super().render(request)


@pytest.fixture
def service_and_prompts(tmp_path: Path):
    config = AppConfig.model_validate(
        {
            "models": [tiny_sd().model_dump()],
            "templates_path": str(TEMPLATES),
            "storage": {"root": str(tmp_path / "images")},
            "jobs": {"store_url": f"sqlite:///{tmp_path / 'jobs.sqlite3'}"},
        }
    )
    prompts = CountingPrompts(PromptCatalog.from_yaml(TEMPLATES))
    return open_image_service(config, prompts, {}), prompts


async def test_a_plain_prompt_is_rendered_without_the_templater(service_and_prompts):
    service, prompts = service_and_prompts
    body = ImageGenerationRequest(
        model="sd-unit", prompt="  a red cup  ", negative_prompt="blurry", n=2, seed=7
    )
    call = await service.plan_generation(body)
    assert prompts.renders == 0
    expected = prompts.catalog.render(service._prompt_request(body))
    assert call.spec.prompt == expected.prompt == "a red cup"
    assert call.spec.negative_prompt == expected.negative_prompt == "blurry"
    assert call.spec.seeds == (7, 8)


@pytest.mark.parametrize(
    "catalog_fields",
    [
        {"style": "photorealistic"},
        {"template": "product-main-shot", "variables": {"product_name": "mug"}},
    ],
)
async def test_a_request_naming_the_catalog_goes_to_the_templater(
    service_and_prompts, catalog_fields
):
    service, prompts = service_and_prompts
    body = ImageGenerationRequest(model="sd-unit", prompt="a red cup", **catalog_fields)
    call = await service.plan_generation(body)
    assert prompts.renders == 1
    assert call.spec.prompt == prompts.catalog.render(service._prompt_request(body)).prompt


async def test_variables_without_a_template_are_refused_locally_too(service_and_prompts):
    service, prompts = service_and_prompts
    body = ImageGenerationRequest(model="sd-unit", prompt="a cup", variables={"x": "y"})
    with pytest.raises(InvalidRequestError, match="template"):
        await service.plan_generation(body)
    assert prompts.renders == 0
