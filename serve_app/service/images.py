"""The image service: check a request against its model's limits, render the prompt,
prepare input images, call the model, store or inline the results. The Gateway serves it
and the JobRunner runs jobs through it; no web framework, no Ray, no torch."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from serve_app.config import AppConfig, ModelConfig, parse_size
from serve_app.errors import (
    ErrorCode,
    InvalidRequestError,
    NotFoundError,
    ServiceUnavailableError,
)
from serve_app.families import Task
from serve_app.models.spec import (
    AdapterUse,
    EditSpec,
    GenerationResult,
    GenerationSpec,
    PartialImage,
    StreamAccepted,
)
from serve_app.observability.metrics import ServiceMetrics
from serve_app.prompts import PromptCatalog, PromptRequest, RenderedPrompt, check_prompt_request
from serve_app.protocol import (
    ImageCompletedEvent,
    ImageData,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagePartialEvent,
    ImageRequest,
    ImagesResponse,
    ImageStreamEvent,
    ImageStreamUsage,
    ImageUsage,
    LoraRequest,
)
from serve_app.service.backends import ModelBackend, PromptBackend
from serve_app.service.image_inputs import ImageInputs, ImageSource
from serve_app.service.resolve import resolve_model
from serve_app.service.result_cache import ResultCache
from serve_app.service.sizing import check_size, requested_size, size_from_aspect
from serve_app.storage import Storage, build_storage

SEED_SPACE = 2**32


def pick_seed(seed: int | None) -> int:
    """The request's seed, or a random one (echoed back, so the result can be remade)."""
    return seed if seed is not None else secrets.randbelow(SEED_SPACE)


@dataclass(frozen=True)
class ModelCall:
    """A request made ready for its model: the spec to run and what the answer reports."""

    model: ModelConfig
    spec: GenerationSpec | EditSpec
    revised_prompt: str
    size: str
    steps: int
    # The caller chose the seed: an exact repeat is worth answering from the result cache.
    seeded: bool = False


# Renders requests that use no catalog entry (see ImageService._render).
_PLAIN_PROMPTS = PromptCatalog()


class ImageService:
    def __init__(
        self,
        config: AppConfig,
        prompts: PromptBackend,
        models: dict[str, ModelBackend],
        storage: Storage,
        metrics: ServiceMetrics | None = None,
        results: ResultCache | None = None,
    ):
        self.config = config
        self.metrics = metrics or ServiceMetrics()
        self.prompts = prompts
        self.models = models
        self.storage = storage
        self.image_inputs = ImageInputs(config.images)
        self.results = results or ResultCache.from_config(config, self.metrics)

    # --- generation -------------------------------------------------------------------

    async def generate_images(
        self, body: ImageGenerationRequest, base_url: str, tenant: str
    ) -> tuple[ImagesResponse, GenerationResult]:
        call = await self.plan_generation(body)
        result = await self.run(call, tenant)
        return await self._response(call, result, body, base_url), result

    async def edit_images(
        self,
        body: ImageEditRequest,
        uploads: list[ImageSource],
        mask_upload: ImageSource | None,
        base_url: str,
        tenant: str,
    ) -> tuple[ImagesResponse, GenerationResult]:
        """Edit with images uploaded as files (multipart) or referenced in the JSON body."""
        call = await self.plan_edit(body, uploads, mask_upload)
        result = await self.run(call, tenant)
        return await self._response(call, result, body, base_url), result

    # --- streamed answers ---------------------------------------------------------------

    async def stream_generation(self, body: ImageGenerationRequest) -> ImageStream:
        call = await self.plan_generation(body)
        return await self.open_stream(call, body, "image_generation")

    async def stream_edit(
        self,
        body: ImageEditRequest,
        uploads: list[ImageSource],
        mask_upload: ImageSource | None,
    ) -> ImageStream:
        call = await self.plan_edit(body, uploads, mask_upload)
        return await self.open_stream(call, body, "image_edit")

    async def open_stream(self, call: ModelCall, body: ImageRequest, kind: str) -> ImageStream:
        """Start a planned request as a stream; returns once its model replica has taken it
        (a refusal, such as a full queue, raises here, before any event is sent)."""
        stream = self.models[call.model.name].stream(call.spec)
        try:
            first = await anext(stream)
        except BaseException:
            await stream.aclose()
            raise
        if not isinstance(first, StreamAccepted):
            await stream.aclose()
            raise ServiceUnavailableError(
                "the model's stream did not start; retry", code=ErrorCode.REPLICA_UNAVAILABLE
            )
        return ImageStream(ImageEventWriter(call, body, kind), stream)

    # --- planning: everything before the model call, shared with the JobRunner ------------

    async def plan_generation(self, body: ImageGenerationRequest) -> ModelCall:
        model = self.resolve_model(body.model, task=Task.TEXT_TO_IMAGE)
        self._check_request(model, body.n, body.prompt, body.negative_prompt)
        self._adapters(model, body.loras)
        with self.metrics.timed("template", model.name):
            rendered = await self._render(self._prompt_request(body))
        multiple = model.traits.size_multiple
        if body.size != "auto":
            width, height = requested_size(body.size)
        elif rendered.size:
            width, height = size_from_aspect(rendered.size, model, multiple)
        else:
            width, height = parse_size(model.defaults.size)
        check_size(width, height, model, multiple)
        steps, guidance = self._schedule(model, body, rendered)
        spec = GenerationSpec(
            prompt=rendered.prompt,
            negative_prompt=self._negative_prompt(model, rendered.negative_prompt),
            width=width,
            height=height,
            steps=steps,
            guidance_scale=guidance,
            seeds=self._seeds(body.seed, body.n),
            output_format=body.output_format,
            output_compression=body.output_compression,
            partial_images=self._partial_images(body),
            adapters=self._adapters(model, body.loras),
        )
        return ModelCall(
            model, spec, rendered.prompt, f"{width}x{height}", steps, seeded=body.seed is not None
        )

    async def plan_edit(
        self,
        body: ImageEditRequest,
        uploads: list[ImageSource],
        mask_upload: ImageSource | None,
    ) -> ModelCall:
        model = self.resolve_model(body.model, task=Task.IMAGE_EDIT)
        self._check_request(model, body.n, body.prompt, body.negative_prompt)
        self._adapters(model, body.loras)
        sources = self._edit_sources(model, body, uploads)
        mask_source = mask_upload or (
            ImageSource("mask", reference=body.mask) if body.mask is not None else None
        )
        with self.metrics.timed("template", model.name):
            rendered = await self._render(self._prompt_request(body))
        with self.metrics.timed("inputs", model.name):
            prepared = await self.image_inputs.prepare(model, sources, mask_source, body.size)
        steps, guidance = self._schedule(model, body, rendered)
        image_guidance = body.image_guidance_scale
        if image_guidance is None:
            image_guidance = model.defaults.image_guidance_scale
        spec = EditSpec(
            prompt=rendered.prompt,
            negative_prompt=self._negative_prompt(model, rendered.negative_prompt),
            images=prepared.images,
            mask=prepared.mask,
            steps=steps,
            guidance_scale=guidance,
            image_guidance_scale=image_guidance,
            seeds=self._seeds(body.seed, body.n),
            output_format=body.output_format,
            output_compression=body.output_compression,
            partial_images=self._partial_images(body),
            adapters=self._adapters(model, body.loras),
        )
        return ModelCall(
            model, spec, rendered.prompt, prepared.size, steps, seeded=body.seed is not None
        )

    @staticmethod
    def _edit_sources(
        model: ModelConfig, body: ImageEditRequest, uploads: list[ImageSource]
    ) -> list[ImageSource]:
        if uploads and body.images:
            raise InvalidRequestError(
                "give images either as uploaded files or in `images`, not both",
                code=ErrorCode.INVALID_IMAGE,
                param="images",
            )
        sources = uploads or [
            ImageSource(f"images[{i}]", reference=ref) for i, ref in enumerate(body.images)
        ]
        if not sources:
            raise InvalidRequestError(
                "an edit needs an input image", code=ErrorCode.MISSING_IMAGE, param="image"
            )
        most = model.traits.max_input_images
        if len(sources) > most:
            raise InvalidRequestError(
                f"model {model.name!r} takes at most {most} input image(s), got {len(sources)}",
                code=ErrorCode.TOO_MANY_IMAGES,
                param="image",
            )
        return sources

    def check_job_request(self, body: ImageGenerationRequest | ImageEditRequest) -> ModelConfig:
        """What a job's request can be refused for at submission, before it is queued:
        the model, its task and limits, explicit size, steps and guidance, and a prompt
        that needs a template it lacks. Templates and image URLs are rendered and fetched
        when the job runs."""
        check_prompt_request(self._prompt_request(body))
        if isinstance(body, ImageEditRequest):
            model = self.resolve_model(body.model, task=Task.IMAGE_EDIT)
            self._edit_sources(model, body, [])
        else:
            model = self.resolve_model(body.model, task=Task.TEXT_TO_IMAGE)
        if body.size != "auto":  # an edit's input is cropped to it
            width, height = requested_size(body.size)
            check_size(width, height, model, model.traits.size_multiple)
        self._check_request(model, body.n, body.prompt, body.negative_prompt)
        self._adapters(model, body.loras)
        self._check_schedule(model, body.steps or model.defaults.steps, body.guidance_scale or 0)
        return model

    # --- shared by generation and edits -----------------------------------------------------

    async def _render(self, request: PromptRequest) -> RenderedPrompt:
        """A request that names no template, style or brand needs no catalog: it renders
        here, by the same code on an empty catalog, without a round trip to the
        PromptTemplater."""
        if request.template is None and request.style is None and request.brand is None:
            return _PLAIN_PROMPTS.render(request)
        return await self.prompts.render(request)

    @staticmethod
    def _prompt_request(body: ImageGenerationRequest | ImageEditRequest) -> PromptRequest:
        """The prompt-related part of a request, as the PromptTemplater takes it (edits
        have no template)."""
        template = {}
        if isinstance(body, ImageGenerationRequest):
            template = {"template": body.template, "variables": body.variables}
        return PromptRequest(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            style=body.style,
            brand=body.brand,
            **template,
        )

    def _check_request(
        self, model: ModelConfig, n: int, prompt: str, negative_prompt: str | None
    ) -> None:
        limits = model.limits
        if n > limits.max_n:
            raise InvalidRequestError(
                f"n must be at most {limits.max_n} for model {model.name!r}",
                code=ErrorCode.INVALID_N,
                param="n",
            )
        if len(prompt) > limits.max_prompt_chars:
            raise InvalidRequestError(
                f"prompt is longer than {limits.max_prompt_chars} characters",
                code=ErrorCode.PROMPT_TOO_LONG,
                param="prompt",
            )
        if negative_prompt and not model.traits.supports_negative_prompt:
            raise InvalidRequestError(
                f"model {model.name!r} does not take a negative prompt",
                code=ErrorCode.UNSUPPORTED_PARAMETER,
                param="negative_prompt",
            )

    def _adapters(
        self, model: ModelConfig, loras: list[LoraRequest] | None
    ) -> tuple[AdapterUse, ...]:
        """The request's LoRA adapters as the replica loads them, sorted by name (so the
        same set in another order shares calls and cache entries), or a 4xx that names
        the adapter and what to change."""
        if not loras:
            return ()
        if not model.traits.supports_adapters:
            raise InvalidRequestError(
                f"model {model.name!r} (family {model.family!r}) takes no LoRA adapters",
                code=ErrorCode.UNSUPPORTED_PARAMETER,
                param="loras",
            )
        limits = model.adapters
        if len(loras) > limits.max_per_request:
            raise InvalidRequestError(
                f"model {model.name!r} takes at most {limits.max_per_request} LoRA adapters "
                f"per request, got {len(loras)}",
                code=ErrorCode.TOO_MANY_LORAS,
                param="loras",
            )
        uses = []
        for index, lora in enumerate(loras):
            entry = self.config.lora(lora.name)
            if entry is None:
                raise NotFoundError(
                    f"no LoRA adapter named {lora.name!r}; GET /v1/loras lists them",
                    code=ErrorCode.LORA_NOT_FOUND,
                    param=f"loras[{index}].name",
                )
            if model.name not in entry.models:
                raise InvalidRequestError(
                    f"LoRA adapter {lora.name!r} is for {', '.join(entry.models)}, "
                    f"not model {model.name!r}",
                    code=ErrorCode.LORA_MODEL_MISMATCH,
                    param=f"loras[{index}].name",
                )
            if not abs(lora.scale) <= limits.max_scale:  # also refuses NaN
                raise InvalidRequestError(
                    f"LoRA scale must lie within -{limits.max_scale} and {limits.max_scale} "
                    f"for model {model.name!r}, got {lora.scale}",
                    code=ErrorCode.INVALID_LORA_SCALE,
                    param=f"loras[{index}].scale",
                )
            if any(use.name == lora.name for use in uses):
                raise InvalidRequestError(
                    f"LoRA adapter {lora.name!r} is named twice; give it once with one scale",
                    code=ErrorCode.INVALID_PARAMETER,
                    param=f"loras[{index}].name",
                )
            uses.append(AdapterUse(lora.name, entry.path, entry.weight_name, float(lora.scale)))
        return tuple(sorted(uses, key=lambda use: use.name))

    @staticmethod
    def _negative_prompt(model: ModelConfig, rendered: str | None) -> str | None:
        if not model.traits.supports_negative_prompt:
            return None  # template or style negatives cannot apply
        return rendered or model.defaults.negative_prompt

    @staticmethod
    def _schedule(
        model: ModelConfig, body: ImageRequest, rendered: RenderedPrompt
    ) -> tuple[int, float]:
        """Steps and guidance: the request's, else the template or style's, else the model's."""
        steps = body.steps or rendered.steps or model.defaults.steps
        guidance = body.guidance_scale
        if guidance is None:
            guidance = rendered.guidance_scale
        if guidance is None:
            guidance = model.defaults.guidance_scale
        ImageService._check_schedule(model, steps, guidance)
        return steps, float(guidance)

    @staticmethod
    def _check_schedule(model: ModelConfig, steps: int, guidance: float) -> None:
        limits = model.limits
        if steps > limits.max_steps:
            raise InvalidRequestError(
                f"steps must be at most {limits.max_steps} for model {model.name!r}",
                code=ErrorCode.INVALID_STEPS,
                param="steps",
            )
        if guidance > limits.max_guidance_scale:
            raise InvalidRequestError(
                f"guidance_scale must be at most {limits.max_guidance_scale}",
                code=ErrorCode.INVALID_GUIDANCE_SCALE,
                param="guidance_scale",
            )

    @staticmethod
    def _partial_images(body: ImageRequest) -> int:
        """Previews are made only for someone to see: a stream (a job sets its own)."""
        if not body.stream:
            return 0
        if body.response_format != "b64_json":
            raise InvalidRequestError(
                "a streamed answer carries its images as b64_json; leave response_format "
                "unset or use b64_json",
                code=ErrorCode.UNSUPPORTED_PARAMETER,
                param="response_format",
            )
        return body.partial_images

    @staticmethod
    def _seeds(seed: int | None, n: int) -> tuple[int, ...]:
        first_seed = pick_seed(seed)
        # Image i of a request seeded s uses s+i: asking for n=1 with seed s+i redoes it.
        return tuple((first_seed + i) % SEED_SPACE for i in range(n))

    async def _response(
        self, call: ModelCall, result: GenerationResult, body: ImageRequest, base_url: str
    ) -> ImagesResponse:
        with self.metrics.timed("store", call.model.name):
            data = await self._image_data(result, body, call.revised_prompt, base_url)
        pixels = sum(image.width * image.height for image in result.images)
        return ImagesResponse(
            data=data,
            output_format=body.output_format,
            size=call.size,
            model=call.model.name,
            usage=ImageUsage(images=len(data), megapixels=round(pixels / 1e6, 4), steps=call.steps),
        )

    async def run(self, call: ModelCall, tenant: str) -> GenerationResult:
        """The call's images: from the result cache for an exact repeat of a seeded
        request to a model that keeps results, else from the model (and then kept)."""
        key = self.results.key_for(call.model, call.spec, call.seeded, tenant)
        if key is not None:
            cached = await self.results.get(call.model, key)
            if cached is not None:
                return cached
        result = await self.call_model(call.model, call.spec)
        if key is None:
            return result
        await self.results.put(call.model, key, result)
        return replace(result, cache="miss")

    async def call_model(
        self, model: ModelConfig, spec: GenerationSpec | EditSpec
    ) -> GenerationResult:
        try:
            return await asyncio.wait_for(
                self.models[model.name].run(spec), self.config.gateway.model_timeout_s
            )
        except TimeoutError:
            raise ServiceUnavailableError(
                f"model {model.name!r} did not answer in time", code=ErrorCode.MODEL_TIMEOUT
            ) from None

    async def _image_data(
        self,
        result: GenerationResult,
        body: ImageRequest,
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
                url=self.storage.url(item.key, base_url),
                revised_prompt=revised_prompt,
                seed=image.seed,
            )
            for item, image in zip(stored, result.images, strict=True)
        ]

    def resolve_model(self, name: str | None, task: Task | None = None) -> ModelConfig:
        """The named model (404 if unknown), or the first one for `task` if unnamed."""
        return resolve_model(self.config, name, task)


class ImageEventWriter:
    """OpenAI's image stream events for one request: `<kind>.partial_image` per preview,
    `<kind>.completed` per final image (kind: image_generation or image_edit)."""

    def __init__(self, call: ModelCall, body: ImageRequest, kind: str):
        self.call = call
        self.kind = kind
        self.created_at = int(time.time())
        self.common = {
            "size": call.size,
            "quality": getattr(body, "quality", None) or "auto",
            # The diffusion models make opaque pictures, whatever was asked.
            "background": "opaque",
            "output_format": call.spec.output_format,
        }

    def partial(self, partial: PartialImage) -> ImagePartialEvent:
        return ImagePartialEvent(
            type=f"{self.kind}.partial_image",
            b64_json=base64.b64encode(partial.data).decode("ascii"),
            created_at=int(time.time()),
            index=partial.index,
            partial_image_index=partial.partial_image_index,
            width=partial.width,
            height=partial.height,
            **self.common,
        )

    def completed(self, result: GenerationResult) -> list[ImageCompletedEvent]:
        return [
            ImageCompletedEvent(
                type=f"{self.kind}.completed",
                b64_json=base64.b64encode(image.data).decode("ascii"),
                created_at=int(time.time()),
                index=index,
                seed=image.seed,
                revised_prompt=self.call.revised_prompt,
                batch_images=result.batch_images,
                usage=ImageStreamUsage(
                    images=1,
                    megapixels=round(image.width * image.height / 1e6, 4),
                    steps=self.call.steps,
                ),
                **self.common,
            )
            for index, image in enumerate(result.images)
        ]


class ImageStream:
    """A started stream: its events in order, and the whole result once they are sent."""

    def __init__(self, writer: ImageEventWriter, items: AsyncIterator):
        self.writer = writer
        self.model = writer.call.model.name
        self._items = items
        self.result: GenerationResult | None = None

    async def events(self) -> AsyncIterator[ImageStreamEvent]:
        async for item in self._items:
            if isinstance(item, PartialImage):
                yield self.writer.partial(item)
            elif isinstance(item, GenerationResult):
                self.result = item
                for event in self.writer.completed(item):
                    yield event
                return
        raise ServiceUnavailableError(
            "the model's stream ended without its images; retry",
            code=ErrorCode.REPLICA_UNAVAILABLE,
        )

    async def aclose(self) -> None:
        """Closing the model's stream (the client left) abandons the request there."""
        await self._items.aclose()  # type: ignore[attr-defined]


def open_image_service(
    config: AppConfig,
    prompts: PromptBackend,
    models: dict[str, ModelBackend],
    metrics: ServiceMetrics | None = None,
) -> ImageService:
    """The image service with the storage the config names (Gateway and JobRunner alike)."""
    return ImageService(config, prompts, models, build_storage(config), metrics)
