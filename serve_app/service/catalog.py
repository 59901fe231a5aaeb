"""What clients choose from (models with their capabilities, templates, styles, brands)
and whether the models answer: the catalog and health routes' logic."""

from __future__ import annotations

import asyncio
from typing import Any

from serve_app.config import AppConfig, LoraConfig, ModelConfig
from serve_app.families import Task
from serve_app.protocol import (
    ChatCapabilities,
    LoraCard,
    LoraList,
    ModelBatching,
    ModelCapabilities,
    ModelCard,
    ModelList,
)
from serve_app.service.backends import ModelBackend, PromptBackend


def chat_card(model: ModelConfig) -> ChatCapabilities | None:
    if model.task is not Task.VISION_CHAT:
        return None
    limits = model.chat.limits
    return ChatCapabilities(
        max_images=limits.max_images,
        max_image_pixels=limits.max_image_pixels,
        low_detail_pixels=limits.low_detail_pixels,
        max_prompt_tokens=limits.max_prompt_tokens,
        max_output_tokens=limits.max_output_tokens,
        max_n=limits.max_n,
        default_max_tokens=model.chat.defaults.max_tokens,
        thinks=model.traits.reasoning_markers is not None,
        structured_output=["text", "json_object", "json_schema"],
    )


def model_card(model: ModelConfig, loras: list[LoraConfig] = ()) -> ModelCard:
    """`loras`: the catalog's adapters for this model (AppConfig.loras_for)."""
    traits, limits = model.traits, model.limits
    return ModelCard(
        chat=chat_card(model),
        loras=[lora.name for lora in loras],
        id=model.name,
        task=model.traits.task,
        family=model.family,
        description=model.description,
        default_size=model.defaults.size,
        max_n=limits.max_n,
        min_side=limits.min_side,
        max_side=limits.max_side,
        max_pixels=limits.max_pixels,
        max_steps=limits.max_steps,
        capabilities=ModelCapabilities(
            max_input_images=(
                model.chat.limits.max_images
                if model.task is Task.VISION_CHAT
                else traits.max_input_images
            ),
            supports_mask=traits.supports_mask,
            supports_negative_prompt=traits.supports_negative_prompt,
            supports_adapters=traits.supports_adapters,
            reports_progress=traits.reports_steps,
            supports_partial_images=traits.reports_steps,
            size_multiple=traits.size_multiple,
            result_cache=model.result_cache,
            batching=ModelBatching(
                mode=model.batching_mode,
                max_batch_images=model.batching.max_batch_size,
                max_batch_work=model.batching.work_budget(),
            ),
        ),
    )


class Catalog:
    def __init__(self, config: AppConfig, prompts: PromptBackend, models: dict[str, ModelBackend]):
        self.config = config
        self.prompts = prompts
        self.models = models

    def model_list(self) -> ModelList:
        return ModelList(
            data=[
                model_card(model, self.config.loras_for(model.name)) for model in self.config.models
            ]
        )

    def lora_list(self) -> LoraList:
        return LoraList(
            data=[
                LoraCard(id=lora.name, description=lora.description, models=served)
                for lora in self.config.loras
                if (served := [name for name in lora.models if self.config.model(name)])
            ]
        )

    async def templates(self) -> list[dict[str, Any]]:
        return (await self.prompts.listing())["templates"]

    async def styles(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(styles, brands)."""
        listing = await self.prompts.listing()
        return listing["styles"], listing["brands"]

    async def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        async def probe(name: str, backend: ModelBackend) -> dict[str, Any]:
            try:
                info = await asyncio.wait_for(backend.health(), timeout_s)
                return {"status": "ok", **info}
            except Exception as error:  # a dead or stuck replica is reported, not raised
                return {"model": name, "status": "unavailable", "reason": type(error).__name__}

        reports = await asyncio.gather(*(probe(n, b) for n, b in self.models.items()))
        healthy = all(report["status"] == "ok" for report in reports)
        return {"status": "ok" if healthy else "degraded", "models": reports}
