"""The Gateway's serving logic: validate against the model's limits, render the prompt,
call the model, store or inline the images. Plain Python; no Ray, no torch."""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import Any

from serve_app.api.backends import ModelBackend, PromptBackend
from serve_app.api.protocol import (
    ImageData,
    ImageGenerationRequest,
    ImagesResponse,
    ImageUsage,
    ModelCard,
    ModelList,
)
from serve_app.api.sizing import check_size, requested_size, size_from_aspect
from serve_app.config import AppConfig, ModelConfig, parse_size
from serve_app.errors import InvalidRequestError, NotFoundError, ServiceUnavailableError
from serve_app.models.registry import NEGATIVE_PROMPT_SUPPORT, SIZE_MULTIPLES
from serve_app.models.spec import GenerationResult, GenerationSpec
from serve_app.prompts import PromptRequest
from serve_app.storage import LocalStorage, UrlSigner

SEED_SPACE = 2**32


class GatewayService:
    def __init__(
        self,
        config: AppConfig,
        prompts: PromptBackend,
        models: dict[str, ModelBackend],
        storage: LocalStorage,
        signer: UrlSigner,
    ):
        self.config = config
        self.prompts = prompts
        self.models = models
        self.storage = storage
        self.signer = signer

    # --- generation -------------------------------------------------------------------

    async def generate_images(
        self, body: ImageGenerationRequest, base_url: str
    ) -> tuple[ImagesResponse, GenerationResult]:
        model = self.resolve_model(body.model)
        limits = model.limits
        if body.n > limits.max_n:
            raise InvalidRequestError(
                f"n must be at most {limits.max_n} for model {model.name!r}",
                code="invalid_n",
                param="n",
            )
        if len(body.prompt) > limits.max_prompt_chars:
            raise InvalidRequestError(
                f"prompt is longer than {limits.max_prompt_chars} characters",
                code="prompt_too_long",
                param="prompt",
            )
        if body.negative_prompt and not NEGATIVE_PROMPT_SUPPORT[model.family]:
            raise InvalidRequestError(
                f"model {model.name!r} does not take a negative prompt",
                code="unsupported_parameter",
                param="negative_prompt",
            )

        rendered = await self.prompts.render(
            PromptRequest(
                prompt=body.prompt,
                negative_prompt=body.negative_prompt,
                template=body.template,
                variables=body.variables,
                style=body.style,
                brand=body.brand,
            )
        )
        negative_prompt = rendered.negative_prompt or model.defaults.negative_prompt
        if not NEGATIVE_PROMPT_SUPPORT[model.family]:
            negative_prompt = None  # template or style negatives cannot apply

        multiple = SIZE_MULTIPLES[model.family]
        if body.size != "auto":
            width, height = requested_size(body.size)
        elif rendered.size:
            width, height = size_from_aspect(rendered.size, model, multiple)
        else:
            width, height = parse_size(model.defaults.size)
        check_size(width, height, model, multiple)

        steps = body.steps or rendered.steps or model.defaults.steps
        if steps > limits.max_steps:
            raise InvalidRequestError(
                f"steps must be at most {limits.max_steps} for model {model.name!r}",
                code="invalid_steps",
                param="steps",
            )
        guidance = body.guidance_scale
        if guidance is None:
            guidance = rendered.guidance_scale
        if guidance is None:
            guidance = model.defaults.guidance_scale
        if guidance > limits.max_guidance_scale:
            raise InvalidRequestError(
                f"guidance_scale must be at most {limits.max_guidance_scale}",
                code="invalid_guidance_scale",
                param="guidance_scale",
            )

        first_seed = body.seed if body.seed is not None else secrets.randbelow(SEED_SPACE)
        spec = GenerationSpec(
            prompt=rendered.prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=float(guidance),
            # Image i of a request seeded s uses s+i: asking for n=1 with seed s+i redoes it.
            seeds=tuple((first_seed + i) % SEED_SPACE for i in range(body.n)),
            output_format=body.output_format,
            output_compression=body.output_compression,
        )
        result = await self._call_model(model, spec)
        data = await self._image_data(result, body, rendered.prompt, base_url)
        response = ImagesResponse(
            data=data,
            output_format=body.output_format,
            size=f"{width}x{height}",
            model=model.name,
            usage=ImageUsage(
                images=len(data), megapixels=round(width * height * len(data) / 1e6, 4), steps=steps
            ),
        )
        return response, result

    async def _call_model(self, model: ModelConfig, spec: GenerationSpec) -> GenerationResult:
        try:
            return await asyncio.wait_for(
                self.models[model.name].generate(spec), self.config.gateway.model_timeout_s
            )
        except TimeoutError:
            raise ServiceUnavailableError(
                f"model {model.name!r} did not answer in time", code="model_timeout"
            ) from None

    async def _image_data(
        self,
        result: GenerationResult,
        body: ImageGenerationRequest,
        revised_prompt: str,
        base_url: str,
    ) -> list[ImageData]:
        if body.response_format == "b64_json":
            return [
                ImageData(
                    b64_json=base64.b64encode(image.data).decode("ascii"),
                    revised_prompt=revised_prompt,
                    seed=image.seed,
                )
                for image in result.images
            ]
        stored = await asyncio.to_thread(
            lambda: [self.storage.put(image.data, body.output_format) for image in result.images]
        )
        return [
            ImageData(
                url=self.file_url(item.key, base_url),
                revised_prompt=revised_prompt,
                seed=image.seed,
            )
            for item, image in zip(stored, result.images, strict=True)
        ]

    def file_url(self, key: str, base_url: str) -> str:
        base = (self.config.storage.public_base_url or base_url).rstrip("/")
        expires, signature = self.signer.sign(key)
        return f"{base}/files/{key}?expires={expires}&sig={signature}"

    def resolve_model(self, name: str | None) -> ModelConfig:
        if name is None:
            return self.config.models[0]
        model = self.config.model(name)
        if model is None:
            known = ", ".join(m.name for m in self.config.models)
            raise NotFoundError(
                f"model {name!r} does not exist; available: {known}",
                code="model_not_found",
                param="model",
            )
        return model

    # --- catalog and operations ---------------------------------------------------------

    def list_models(self) -> ModelList:
        return ModelList(
            data=[
                ModelCard(
                    id=m.name,
                    task=m.task,
                    family=m.family,
                    description=m.description,
                    default_size=m.defaults.size,
                    max_n=m.limits.max_n,
                    max_side=m.limits.max_side,
                    max_steps=m.limits.max_steps,
                )
                for m in self.config.models
            ]
        )

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
