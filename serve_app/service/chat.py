"""The chat service: check a chat request against its model's limits, bring its images
through the one hardened input path, call the model, and answer in the chat-completions
shape, whole or as stream chunks. Served by the Gateway and the JobRunner; no web
framework, no Ray, no torch."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from serve_app.config import AppConfig, ModelConfig
from serve_app.errors import ErrorCode, InvalidRequestError, ServiceUnavailableError
from serve_app.families import Task
from serve_app.images import to_rgb_array
from serve_app.models.chat_spec import ChatDeltas, ChatResult, ChatSpec, FinishReason
from serve_app.models.grammar import ANY_OBJECT, json_grammar
from serve_app.protocol import (
    AssistantAnswer,
    ChatChoiceBody,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatUsage,
    ChunkChoice,
    ChunkDelta,
    ImagePart,
    ImageReference,
    JsonObjectFormat,
    JsonSchemaResponseFormat,
    MultimodalCompletionRequest,
    TextPart,
    UserMessage,
)
from serve_app.service.backends import ChatBackend
from serve_app.service.image_inputs import ImageInputs, ImageSource
from serve_app.service.images import SEED_SPACE, pick_seed
from serve_app.service.resolve import resolve_model


@dataclass(frozen=True)
class ChatCall:
    model: ModelConfig
    spec: ChatSpec
    seed: int


class ChatService:
    def __init__(
        self, config: AppConfig, models: dict[str, ChatBackend], image_inputs: ImageInputs
    ):
        self.config = config
        self.models = models
        self.image_inputs = image_inputs

    def resolve_model(self, name: str | None) -> ModelConfig:
        return resolve_model(self.config, name, Task.VISION_CHAT)

    # --- answers ------------------------------------------------------------------------

    async def complete(
        self, body: ChatCompletionRequest, job_id: str | None = None
    ) -> tuple[ChatCompletion, ChatResult]:
        call = await self.plan(body, job_id=job_id)
        result = await self._call(call)
        return completion(call, result), result

    async def stream(
        self,
        body: ChatCompletionRequest,
        on_result: Callable[[ChatResult], None] | None = None,
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks as OpenAI streams them: the role first, then deltas, then one chunk per
        choice with its finish reason, and the usage last when asked. A request refused
        before its first token raises here, before any chunk. `on_result` is told the
        whole result (tokens, timings) as its last chunks go out."""
        call = await self.plan(body)
        chunks = ChunkWriter(
            call, include_usage=bool(body.stream_options and body.stream_options.include_usage)
        )
        backend = self.models[call.model.name]
        stream = backend.stream(call.spec)
        try:
            first = await anext(stream)
            yield chunks.roles()
            item: ChatDeltas | ChatResult | None = first
            while item is not None:
                if isinstance(item, ChatResult):
                    if on_result is not None:
                        on_result(item)
                    for chunk in chunks.finish(item):
                        yield chunk
                    return
                chunk = chunks.deltas(item)
                if chunk is not None:
                    yield chunk
                item = await anext(stream, None)
            raise ServiceUnavailableError(
                "the model's stream ended without an answer; retry",
                code=ErrorCode.REPLICA_UNAVAILABLE,
            )
        finally:
            await stream.aclose()

    async def check_job_request(self, body: ChatCompletionRequest) -> ModelConfig:
        """What a chat job can be refused for at submission: its model, limits and
        response format. Images are fetched when it runs."""
        model = self.resolve_model(body.model)
        self._check(model, body)
        self._grammar(body)
        return model

    async def _call(self, call: ChatCall) -> ChatResult:
        try:
            return await asyncio.wait_for(
                self.models[call.model.name].run(call.spec), self.config.gateway.model_timeout_s
            )
        except TimeoutError:
            raise ServiceUnavailableError(
                f"model {call.model.name!r} did not answer in time", code=ErrorCode.MODEL_TIMEOUT
            ) from None

    # --- planning -----------------------------------------------------------------------

    async def plan(self, body: ChatCompletionRequest, job_id: str | None = None) -> ChatCall:
        model = self.resolve_model(body.model)
        self._check(model, body)
        grammar = self._grammar(body)
        messages, sources = self._messages(body)
        images = await asyncio.gather(
            *(self._image(model, source, detail) for source, detail in sources)
        )
        defaults = model.chat.defaults
        thinking = body.thinking
        if thinking is None and body.chat_template_kwargs is not None:
            thinking = body.chat_template_kwargs.enable_thinking
        if thinking is None:
            thinking = defaults.thinking
        seed = pick_seed(body.seed)
        spec = ChatSpec(
            messages=tuple(messages),
            images=tuple(images),
            max_tokens=body.max_completion_tokens or body.max_tokens or defaults.max_tokens,
            temperature=defaults.temperature if body.temperature is None else body.temperature,
            top_p=defaults.top_p if body.top_p is None else body.top_p,
            seeds=tuple((seed + i) % SEED_SPACE for i in range(body.n)),
            stop=_stops(body.stop),
            grammar=grammar,
            # A structured answer starts at its first token: no thinking first.
            thinking=thinking and grammar is None,
            job_id=job_id,
        )
        return ChatCall(model, spec, seed)

    def _check(self, model: ModelConfig, body: ChatCompletionRequest) -> None:
        limits = model.chat.limits
        if body.n > limits.max_n:
            raise _refuse(
                f"n must be at most {limits.max_n} for model {model.name!r}",
                ErrorCode.INVALID_N,
                "n",
            )
        if (
            body.max_tokens
            and body.max_completion_tokens
            and body.max_tokens != body.max_completion_tokens
        ):
            raise _refuse(
                "max_tokens and max_completion_tokens differ; give one",
                ErrorCode.INVALID_MAX_TOKENS,
                "max_completion_tokens",
            )
        asked = body.max_completion_tokens or body.max_tokens
        if asked is not None and asked > limits.max_output_tokens:
            raise _refuse(
                f"max_tokens must be at most {limits.max_output_tokens} for model {model.name!r}",
                ErrorCode.INVALID_MAX_TOKENS,
                "max_tokens" if body.max_tokens else "max_completion_tokens",
            )
        stops = _stops(body.stop)
        if len(stops) > limits.max_stop_sequences:
            raise _refuse(
                f"stop takes at most {limits.max_stop_sequences} strings",
                ErrorCode.TOO_MANY_STOP_SEQUENCES,
                "stop",
            )
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(body, name):
                raise _refuse(
                    f"{name} is not supported; leave it unset or 0",
                    ErrorCode.UNSUPPORTED_PARAMETER,
                    name,
                )
        if body.logprobs:
            raise _refuse("logprobs are not supported", ErrorCode.UNSUPPORTED_PARAMETER, "logprobs")
        if len(body.messages) > limits.max_messages:
            raise _refuse(
                f"model {model.name!r} takes at most {limits.max_messages} messages",
                ErrorCode.INVALID_MESSAGES,
                "messages",
            )
        images = sum(
            isinstance(part, ImagePart)
            for message in body.messages
            if isinstance(message, UserMessage) and not isinstance(message.content, str)
            for part in message.content
        )
        if images > limits.max_images:
            raise _refuse(
                f"model {model.name!r} takes at most {limits.max_images} image(s) per "
                f"request, got {images}",
                ErrorCode.TOO_MANY_IMAGES,
                "messages",
            )
        chars = sum(len(text) for text in _texts(body))
        if chars > limits.max_text_chars:
            raise _refuse(
                f"the messages hold {chars} characters of text; model {model.name!r} "
                f"takes at most {limits.max_text_chars}",
                ErrorCode.PROMPT_TOO_LONG,
                "messages",
            )

    @staticmethod
    def _grammar(body: ChatCompletionRequest) -> str | None:
        fmt = body.response_format
        if isinstance(fmt, JsonObjectFormat):
            return json_grammar(ANY_OBJECT, "response_format")
        if isinstance(fmt, JsonSchemaResponseFormat):
            return json_grammar(fmt.json_schema.schema_, "response_format.json_schema.schema")
        return None

    @staticmethod
    def _messages(
        body: ChatCompletionRequest,
    ) -> tuple[list[dict[str, Any]], list[tuple[ImageSource, str]]]:
        """Messages in the processors' chat-template form, and the images in order."""
        messages: list[dict[str, Any]] = []
        sources: list[tuple[ImageSource, str]] = []
        for number, message in enumerate(body.messages):
            role = "system" if message.role == "developer" else message.role
            content = message.content
            parts: list[dict[str, Any]] = []
            if content is None:
                content = ""
            if isinstance(content, str):
                parts.append({"type": "text", "text": content})
            else:
                for index, part in enumerate(content):
                    if isinstance(part, TextPart):
                        parts.append({"type": "text", "text": part.text})
                    else:
                        param = f"messages[{number}].content[{index}].image_url"
                        reference = ImageReference(image_url=part.image_url.url)
                        sources.append(
                            (ImageSource(param, reference=reference), part.image_url.detail)
                        )
                        parts.append({"type": "image"})
            messages.append({"role": role, "content": parts})
        return messages, sources

    async def _image(self, model: ModelConfig, source: ImageSource, detail: str) -> np.ndarray:
        image = await self.image_inputs.load(source)
        limits = model.chat.limits
        budget = limits.low_detail_pixels if detail == "low" else limits.max_image_pixels
        return await asyncio.to_thread(_within_budget, image, budget, model.traits.size_multiple)

    # --- GLM-4.6V-Flash-WEB's request shape ---------------------------------------------

    @staticmethod
    def from_multimodal(
        body: MultimodalCompletionRequest, upload: bytes | None = None
    ) -> tuple[ChatCompletionRequest, ImageSource | None]:
        """The chat request a /v1/multimodal/completions body means (one image, one prompt)."""
        given = [name for name in ("image", "image_url") if getattr(body, name)]
        if upload is not None:
            given.append("image")
        if len(given) > 1:
            raise _refuse(
                "give one image: `image` or `image_url`", ErrorCode.INVALID_IMAGE, "image"
            )
        request = ChatCompletionRequest(
            model=body.model,
            messages=[UserMessage(role="user", content=[TextPart(type="text", text=body.prompt)])],
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            thinking=body.thinking,
        )
        if upload is not None:
            return request, ImageSource("image", upload=upload)
        if body.image:
            return request, ImageSource("image", reference=ImageReference(b64_json=body.image))
        if body.image_url:
            return request, ImageSource(
                "image_url", reference=ImageReference(image_url=body.image_url)
            )
        return request, None

    async def complete_multimodal(
        self, body: ChatCompletionRequest, source: ImageSource | None
    ) -> tuple[ChatCompletion, ChatResult]:
        call = await self.plan(body)
        if source is not None:
            limits = call.model.chat.limits
            if limits.max_images < 1:
                raise _refuse(
                    f"model {call.model.name!r} takes no images",
                    ErrorCode.TOO_MANY_IMAGES,
                    source.param,
                )
            pixels = await self._image(call.model, source, "auto")
            message = dict(call.spec.messages[0])
            message["content"] = [{"type": "image"}, *message["content"]]
            call = replace(call, spec=replace(call.spec, messages=(message,), images=(pixels,)))
        result = await self._call(call)
        return completion(call, result), result


# --- answers in the chat-completions shape --------------------------------------------------


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def usage(result: ChatResult) -> ChatUsage:
    completion_tokens = result.completion_tokens
    return ChatUsage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=result.prompt_tokens + completion_tokens,
    )


def _client_finish(reason: FinishReason) -> str:
    return "length" if reason is FinishReason.LENGTH else "stop"


def completion(call: ChatCall, result: ChatResult) -> ChatCompletion:
    return ChatCompletion(
        id=completion_id(),
        model=call.model.name,
        seed=call.seed,
        choices=[
            ChatChoiceBody(
                index=index,
                message=AssistantAnswer(content=choice.text, reasoning_content=choice.reasoning),
                finish_reason=_client_finish(choice.finish_reason),  # type: ignore[arg-type]
            )
            for index, choice in enumerate(result.choices)
        ],
        usage=usage(result),
    )


class ChunkWriter:
    """The chunks of one streamed answer, all with one id and creation time."""

    def __init__(self, call: ChatCall, include_usage: bool):
        self.id = completion_id()
        self.created = int(time.time())
        self.model = call.model.name
        self.n = call.spec.n
        self.include_usage = include_usage

    def _chunk(
        self, choices: list[ChunkChoice], usage: ChatUsage | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def roles(self) -> ChatCompletionChunk:
        return self._chunk(
            [
                ChunkChoice(index=i, delta=ChunkDelta(role="assistant", content=""))
                for i in range(self.n)
            ]
        )

    def deltas(self, batch: ChatDeltas) -> ChatCompletionChunk | None:
        """One chunk for the steps in `batch`: each choice's new text, joined in order."""
        content: dict[int, str] = {}
        reasoning: dict[int, str] = {}
        for delta in batch.deltas:
            content[delta.index] = content.get(delta.index, "") + delta.content
            reasoning[delta.index] = reasoning.get(delta.index, "") + delta.reasoning
        choices = [
            ChunkChoice(
                index=index,
                delta=ChunkDelta(
                    content=content[index] or None, reasoning_content=reasoning[index] or None
                ),
            )
            for index in sorted(content)
            if content[index] or reasoning[index]
        ]
        return self._chunk(choices) if choices else None

    def finish(self, result: ChatResult) -> list[ChatCompletionChunk]:
        chunks = [
            self._chunk(
                [
                    ChunkChoice(
                        index=index,
                        delta=ChunkDelta(),
                        finish_reason=_client_finish(choice.finish_reason),  # type: ignore[arg-type]
                    )
                ]
            )
            for index, choice in enumerate(result.choices)
        ]
        if self.include_usage:
            chunks.append(self._chunk([], usage(result)))
        return chunks


# --- helpers --------------------------------------------------------------------------------


def _refuse(message: str, code: ErrorCode, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, code=code, param=param)


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _texts(body: ChatCompletionRequest) -> list[str]:
    texts = []
    for message in body.messages:
        content = message.content
        if isinstance(content, str):
            texts.append(content)
        elif content is not None:
            texts.extend(part.text for part in content if isinstance(part, TextPart))
    return texts


def _within_budget(image: Image.Image, budget: int, multiple: int) -> np.ndarray:
    """Scaled down, aspect kept, to at most `budget` pixels (never up): the processor
    then needs no further resize beyond rounding to its patch grid."""
    width, height = image.size
    if width * height > budget:
        scale = math.sqrt(budget / (width * height))
        width = max(multiple, int(width * scale))
        height = max(multiple, int(height * scale))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return to_rgb_array(image)
