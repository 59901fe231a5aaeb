"""Request and response schemas of the HTTP API, OpenAI-compatible where OpenAI has a shape."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from serve_app.errors import ErrorCode, InvalidRequestError
from serve_app.families import Batching, Task


class APIModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Validation context of a multipart form, whose fields are all text.
FORM = {"form": True}


def _json_number(value: Any, info: ValidationInfo) -> Any:
    """A number in JSON is a JSON number: not `true`, not "3" (pydantic's lax mode would take
    both). A multipart form's fields are text and are converted as usual."""
    if isinstance(value, bool) or (isinstance(value, str) and not (info.context or {}).get("form")):
        raise ValueError("must be a number")
    return value


def _json_bool(value: Any, info: ValidationInfo) -> Any:
    """A boolean in JSON is `true` or `false`, not 0 or "yes"; a form's text converts."""
    if value is not None and not isinstance(value, bool) and not (info.context or {}).get("form"):
        raise ValueError("must be true or false")
    return value


# Input images one edit may carry in any form (a model takes at most its max_input_images).
MAX_IMAGES = 16
# Checked by the service with their own error codes (invalid_size, empty_prompt); here they
# are documented, so the schema says what the service accepts.
SIZE_PATTERN = r"^(auto|[0-9]{2,5}x[0-9]{2,5})$"
# Anything but white space (Python's str.isspace() characters, which str.strip() removes).
NOT_BLANK = r"[^\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def _json_text_in_a_form(value: Any, info: ValidationInfo) -> Any:
    """A multipart form carries a structured field as JSON text."""
    if isinstance(value, str) and (info.context or {}).get("form"):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError("must be a JSON array in a form field") from None
    return value


class LoraRequest(APIModel):
    """A LoRA adapter from the catalog (`GET /v1/loras`), applied at `scale`."""

    name: str = Field(max_length=64)
    scale: float = Field(
        1.0, description="0 leaves the base model as it is; at most the model's max_scale."
    )

    _scale_is_a_number = field_validator("scale", mode="before")(_json_number)


# Adapters one request may name at all (each model allows at most its max_per_request).
MAX_LORAS = 8


class ImageRequest(APIModel):
    """What generation and edit requests share: OpenAI's fields, then our extensions."""

    model: str | None = Field(None, description="Model name; the first of its task if unset.")
    prompt: str = Field(max_length=32000)
    n: int = Field(1, ge=1, le=10, description="Images to make (at most the model's max_n).")
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(None, ge=0, le=100)
    user: str | None = Field(None, max_length=256)
    # Accepted for SDK compatibility; the diffusion models have no such switch.
    background: Literal["auto", "opaque"] | None = None
    stream: bool = Field(
        False,
        description="Answer with server-sent events: `partial_images` previews of each image "
        "as it forms, then each final image, then `data: [DONE]`.",
    )
    partial_images: int = Field(
        0,
        ge=0,
        le=3,
        description="Previews per image while it forms (with `stream`, or for a job's event "
        "stream); fewer where the model runs fewer steps than previews + 1.",
    )

    # Extensions.
    negative_prompt: str | None = Field(None, max_length=8000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    steps: int | None = Field(None, ge=1, description="At most the model's max_steps.")
    guidance_scale: float | None = Field(None, ge=0)
    style: str | None = None
    brand: str | None = None
    loras: list[LoraRequest] | None = Field(
        None,
        max_length=MAX_LORAS,
        description="LoRA adapters to apply (a multipart form gives them as JSON text).",
    )

    _loras_in_a_form = field_validator("loras", mode="before")(_json_text_in_a_form)
    _numbers_are_numbers = field_validator(
        "n",
        "output_compression",
        "seed",
        "steps",
        "guidance_scale",
        "partial_images",
        mode="before",
    )(_json_number)
    _bools_are_bools = field_validator("stream", mode="before")(_json_bool)


def _generation_schema(schema: dict[str, Any]) -> None:
    with_template = {"required": ["template"], "properties": {"template": {"type": "string"}}}
    schema["allOf"] = [
        # A prompt may be blank only where a template makes one...
        {"anyOf": [with_template, {"properties": {"prompt": {"pattern": NOT_BLANK}}}]},
        # ...and variables fill a template.
        {
            "anyOf": [
                with_template,
                {"not": {"required": ["variables"]}},
                {"properties": {"variables": {"type": "null"}}},
            ]
        },
    ]


class ImageGenerationRequest(ImageRequest):
    """POST /v1/images/generations."""

    model_config = ConfigDict(json_schema_extra=_generation_schema)

    size: str = Field(
        "auto",
        description="'WxH' (e.g. '1024x768') within the model's limits, or 'auto'.",
        json_schema_extra={"pattern": SIZE_PATTERN},
    )
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None
    moderation: Literal["auto", "low"] | None = None
    template: str | None = None
    variables: dict[str, str] | None = Field(
        None, max_length=32, description="The template's variables; only with `template`."
    )


def _one_of_two(schema: dict[str, Any]) -> None:
    for name in ("image_url", "b64_json"):
        schema["properties"][name].pop("anyOf", None)
        schema["properties"][name].pop("default", None)
        schema["properties"][name].update(type="string", maxLength=96 << 20)
    schema["minProperties"] = schema["maxProperties"] = 1


class ImageReference(APIModel):
    """An input image in a JSON body: an https (or data:) URL, or bare base64; exactly one."""

    model_config = ConfigDict(json_schema_extra=_one_of_two)

    image_url: str | None = Field(None, max_length=96 << 20)
    b64_json: str | None = Field(None, max_length=96 << 20)

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageReference:
        given = [name for name in self.model_fields_set if getattr(self, name) is not None]
        if len(self.model_fields_set) != 1 or len(given) != 1:
            raise ValueError("give exactly one of image_url or b64_json")
        return self


def _edit_schema(schema: dict[str, Any]) -> None:
    # Checked by the service (missing_image, empty_prompt), so a form can bring files instead.
    schema["required"] = [*schema.get("required", []), "images"]
    schema["properties"]["images"]["minItems"] = 1
    schema["properties"]["prompt"]["pattern"] = NOT_BLANK


class ImageEditRequest(ImageRequest):
    """POST /v1/images/edits. Multipart (as the OpenAI SDK sends it) carries the images as
    files `image` / `image[]` / `mask`; JSON carries them in `images` and `mask`."""

    model_config = ConfigDict(json_schema_extra=_edit_schema)

    images: list[ImageReference] = Field(
        default_factory=list,
        max_length=MAX_IMAGES,
        description="The image to edit first; more only for models that take several.",
    )
    mask: ImageReference | None = Field(
        None, description="Transparent (or white) where the edit may change the picture."
    )
    size: str = Field(
        "auto",
        description="'WxH' (the input is cropped to it) or 'auto'.",
        json_schema_extra={"pattern": SIZE_PATTERN},
    )
    quality: Literal["auto", "standard", "low", "medium", "high"] | None = None
    input_fidelity: Literal["high", "low"] | None = None
    # InstructPix2Pix: how closely the edit keeps to the input image.
    image_guidance_scale: float | None = Field(None, ge=0)

    _numbers_are_numbers_too = field_validator("image_guidance_scale", mode="before")(_json_number)


class ImageData(APIModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str
    seed: int


class ImageUsage(APIModel):
    """What the request consumed, counted the way an image service bills."""

    images: int
    megapixels: float
    steps: int


class ImagesResponse(APIModel):
    created: int = Field(default_factory=lambda: int(time.time()))
    data: list[ImageData]
    output_format: str
    size: str
    model: str
    usage: ImageUsage


class ImageStreamTokens(APIModel):
    image_tokens: int
    text_tokens: int


class ImageStreamUsage(APIModel):
    """OpenAI's token usage (required by the SDK's event type). Diffusion models are not
    billed by tokens: these counts are 0, and `images`, `megapixels` and `steps` say
    what the image cost, as in a whole answer's `usage`."""

    input_tokens: int = 0
    input_tokens_details: ImageStreamTokens = ImageStreamTokens(image_tokens=0, text_tokens=0)
    output_tokens: int = 0
    total_tokens: int = 0
    images: int
    megapixels: float
    steps: int


class ImageStreamEvent(APIModel):
    """What OpenAI's image events share; `type` is `image_generation.*` or `image_edit.*`."""

    type: str
    b64_json: str
    created_at: int
    # The final image's size, also on a preview (whose own size is `width` x `height`).
    size: str
    quality: str
    background: str
    output_format: str
    # Extension: which of the request's n images.
    index: int


class ImagePartialEvent(ImageStreamEvent):
    """`image_generation.partial_image` / `image_edit.partial_image`: a preview."""

    partial_image_index: int
    width: int
    height: int


class ImageCompletedEvent(ImageStreamEvent):
    """`image_generation.completed` / `image_edit.completed`: one final image."""

    usage: ImageStreamUsage
    seed: int
    revised_prompt: str
    # Images in the pipeline call that made it (1: it ran alone), as x-batch-images says
    # for an answer that is not streamed.
    batch_images: int


class ModelBatching(APIModel):
    """How the model's replica groups concurrent requests into pipeline calls."""

    mode: Batching = Field(
        description="`shared`: requests with the same size, steps, guidance and LoRA set share one "
        "call; `per_request`: each request runs alone (its n images in one call)."
    )
    max_batch_images: int = Field(description="Images one pipeline call holds at most.")
    max_batch_work: float = Field(
        description="Work one pipeline call holds at most, in default images: a request "
        "weighs n x width x height x steps over the model's default size and steps."
    )


class ModelCapabilities(APIModel):
    """What a request to this model may carry."""

    max_input_images: int = Field(description="Input images an edit takes (0: none).")
    supports_mask: bool
    supports_negative_prompt: bool
    supports_adapters: bool = Field(description="Per-request LoRA adapters.")
    reports_progress: bool = Field(description="A job's progress moves with every step.")
    supports_partial_images: bool = Field(
        description="`stream: true` with `partial_images` sends previews as the image forms "
        "(otherwise a stream carries only the final images)."
    )
    size_multiple: int = Field(description="Width and height are multiples of this.")
    result_cache: bool = Field(
        False,
        description="An exact repeat of a seeded request is answered from stored images "
        "(`x-cache: hit`), without the GPU.",
    )
    batching: ModelBatching


class ChatCapabilities(APIModel):
    """What a chat request to a vision-chat model may ask."""

    max_images: int
    max_image_pixels: int
    low_detail_pixels: int
    max_prompt_tokens: int
    max_output_tokens: int
    max_n: int
    default_max_tokens: int
    thinks: bool = Field(description="Returns `reasoning_content` apart from the answer.")
    structured_output: list[str] = Field(description="`response_format` types it enforces.")


class ModelCard(APIModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "image-serving"
    task: Task
    family: str
    description: str = ""
    default_size: str
    max_n: int
    min_side: int
    max_side: int
    max_pixels: int
    max_steps: int
    capabilities: ModelCapabilities
    loras: list[str] = Field(
        default_factory=list, description="The catalog's LoRA adapters for this model."
    )
    # Vision-chat models only.
    chat: ChatCapabilities | None = None


class ModelList(APIModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoraCard(APIModel):
    id: str
    object: Literal["lora"] = "lora"
    description: str = ""
    models: list[str] = Field(description="The models it applies to.")


class LoraList(APIModel):
    object: Literal["list"] = "list"
    data: list[LoraCard]


class TemplateVariableCard(APIModel):
    description: str = ""
    required: bool
    default: str | None = None
    example: str | None = None
    max_length: int


class TemplateCard(APIModel):
    """A prompt template, without its text: enough to build a form for its variables."""

    name: str
    title: str
    category: str
    description: str = ""
    variables: dict[str, TemplateVariableCard]
    style: str | None = None
    size: str | None = Field(None, description="An aspect hint, used when `size` is auto.")


class TemplateList(APIModel):
    object: Literal["list"] = "list"
    data: list[TemplateCard]


class StyleCard(APIModel):
    name: str
    title: str
    description: str = ""
    steps: int | None = None
    guidance_scale: float | None = None


class BrandCard(APIModel):
    name: str
    title: str
    description: str = ""
    palette: list[str]
    banned_terms: list[str]


class StyleList(APIModel):
    object: Literal["list"] = "list"
    data: list[StyleCard]
    brands: list[BrandCard]


Readiness = Literal["ok", "degraded", "unavailable"]


class LivenessReport(APIModel):
    """The Gateway answers; nothing else is checked."""

    status: Literal["ok"]


class DependencyHealth(APIModel):
    status: Literal["ok", "unreachable"]
    # Requests fail without it (else the service is only degraded).
    required: bool
    reason: str | None = None


class DeploymentHealth(APIModel):
    """A deployment's replicas as the Serve controller sees them."""

    state: Readiness
    status: str
    running: int
    target: int
    min_replicas: int


class ReadinessReport(APIModel):
    """`unavailable` (503) when requests would fail; `degraded` when capacity is short
    but requests are served (README, Operations)."""

    status: Readiness
    dependencies: dict[str, DependencyHealth]
    # None outside Ray Serve, or when the Serve controller did not answer.
    deployments: dict[str, DeploymentHealth] | None = None


class HealthReport(ReadinessReport):
    """Readiness, and each model replica's own report; `ok` only when all is well."""

    models: list[dict[str, Any]]


# --- vision chat (OpenAI chat completions) ------------------------------------------------


class TextPart(APIModel):
    type: Literal["text"]
    text: str = Field(max_length=64000)


class ImageUrl(APIModel):
    url: str = Field(max_length=96 << 20, description="An https URL or a data: URL.")
    detail: Literal["auto", "low", "high"] = Field(
        "auto",
        description="A pixel budget: low scales the image to the model's low-detail budget; "
        "auto and high keep up to its full budget.",
    )


class ImagePart(APIModel):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class SystemMessage(APIModel):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)


class UserMessage(APIModel):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = Field(None, max_length=64)


class AssistantMessage(APIModel):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=64)
    # The SDK may echo these back from an earlier answer; they are not part of the prompt.
    refusal: str | None = None
    reasoning_content: str | None = None


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage, Field(discriminator="role")]


class JsonSchemaFormat(APIModel):
    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    _bools = field_validator("strict", mode="before")(_json_bool)


class TextFormat(APIModel):
    type: Literal["text"]


class JsonObjectFormat(APIModel):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(APIModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class StreamOptions(APIModel):
    include_usage: bool = False

    _bools = field_validator("include_usage", mode="before")(_json_bool)


class ChatTemplateOptions(APIModel):
    """vLLM's `chat_template_kwargs`, as far as this service honours it."""

    enable_thinking: bool | None = None

    _bools = field_validator("enable_thinking", mode="before")(_json_bool)


StopString = Annotated[str, Field(max_length=64)]


class ChatCompletionRequest(APIModel):
    """POST /v1/chat/completions, as the OpenAI SDK sends it."""

    model: str | None = Field(None, description="Model name; the first vision-chat model if unset.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(None, ge=1, description="At most the model's output limit.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Same as max_tokens.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    stop: StopString | list[StopString] | None = Field(
        None, description="Up to the model's limit of strings."
    )
    n: int = Field(1, ge=1, le=16, description="Answers to sample (at most the model's max_n).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = Field(None, max_length=256)
    # Accepted for SDK compatibility at their neutral values only.
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: bool | None = None
    # Extensions: thinking on or off for models that think aloud.
    thinking: bool | None = None
    chat_template_kwargs: ChatTemplateOptions | None = None

    _numbers_are_numbers = field_validator(
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "n",
        "frequency_penalty",
        "presence_penalty",
        mode="before",
    )(_json_number)
    _bools = field_validator("stream", "logprobs", "thinking", mode="before")(_json_bool)


class ChatUsage(APIModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantAnswer(APIModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    # The model's thinking, apart from its answer (as vLLM returns it).
    reasoning_content: str | None = None
    refusal: str | None = None


class ChatChoiceBody(APIModel):
    index: int
    message: AssistantAnswer
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(APIModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoiceBody]
    usage: ChatUsage
    # Extension: the seed of choice 0 (choice i used seed + i), to redo the answer.
    seed: int


class ChunkDelta(APIModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(APIModel):
    index: int
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(APIModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: ChatUsage | None = None


class MultimodalCompletionRequest(APIModel):
    """POST /v1/multimodal/completions, the request GLM-4.6V-Flash-WEB's own API takes:
    one image (bare base64 in `image`, or `image_url`) and a prompt."""

    model: str | None = None
    image: str | None = Field(None, max_length=96 << 20, description="Base64 image bytes.")
    image_url: str | None = Field(None, max_length=96 << 20)
    prompt: str = Field(min_length=1, max_length=64000)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    thinking: bool | None = None

    _numbers_are_numbers = field_validator(
        "max_tokens", "temperature", "top_p", "seed", mode="before"
    )(_json_number)
    _bools = field_validator("thinking", mode="before")(_json_bool)


# --- jobs and batches -------------------------------------------------------------------


class JobType(StrEnum):
    """What a job runs: the body of the sync route of the same name."""

    IMAGE_GENERATION = "image_generation"
    IMAGE_EDIT = "image_edit"
    CHAT = "chat"


class JobStatus(StrEnum):
    """queued -> running -> succeeded | failed | canceled, only forward (a running job
    whose worker was lost goes back to queued)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_JOB_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class BatchStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    # Every job of the batch has ended.
    COMPLETED = "completed"


class DeliveryStatus(StrEnum):
    """A webhook delivery: pending -> delivered | failed | disabled (the endpoint said 410)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DISABLED = "disabled"


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None,
    Field(
        max_length=16,
        description="Up to 16 keys (64 chars) and values (512 chars), echoed back.",
    ),
]


class ImageGenerationJob(APIModel):
    """A job that runs what POST /v1/images/generations would."""

    type: Literal[JobType.IMAGE_GENERATION]
    request: ImageGenerationRequest
    metadata: Metadata = None


class ImageEditJob(APIModel):
    """A job that runs what POST /v1/images/edits would; images as URLs or base64."""

    type: Literal[JobType.IMAGE_EDIT]
    request: ImageEditRequest
    metadata: Metadata = None


class ChatJob(APIModel):
    """A job that runs what POST /v1/chat/completions would (not streamed); the answer is
    the job's result."""

    type: Literal[JobType.CHAT]
    request: ChatCompletionRequest
    metadata: Metadata = None


JobItem = Annotated[ImageGenerationJob | ImageEditJob | ChatJob, Field(discriminator="type")]
CallbackUrl = Annotated[
    str | None,
    Field(
        max_length=2048,
        description="Told when the job or batch ends, by a signed POST (Standard Webhooks).",
    ),
]


class ImageGenerationJobCreate(ImageGenerationJob):
    callback_url: CallbackUrl = None


class ImageEditJobCreate(ImageEditJob):
    callback_url: CallbackUrl = None


class ChatJobCreate(ChatJob):
    callback_url: CallbackUrl = None


# POST /v1/jobs: one job, `type` says which request it carries.
JobCreateRequest = Annotated[
    ImageGenerationJobCreate | ImageEditJobCreate | ChatJobCreate, Field(discriminator="type")
]


class BatchCreateRequest(APIModel):
    """POST /v1/batches: many jobs at once, one webhook when the last one ends."""

    jobs: list[JobItem] = Field(min_length=1)
    callback_url: CallbackUrl = None
    metadata: Metadata = None


class JobImage(APIModel):
    url: str | None = None
    seed: int
    sha256: str
    width: int
    height: int


class JobResult(APIModel):
    model: str
    size: str
    steps: int
    revised_prompt: str
    output_format: str
    images: list[JobImage]


class ChatJobResult(APIModel):
    """A chat job's answer: the chat completion the sync route would have returned."""

    model: str
    completion: ChatCompletion


class JobProgress(APIModel):
    step: int
    total: int


class JobTimings(APIModel):
    queued_s: float | None
    running_s: float | None


class JobError(APIModel):
    code: str | None
    message: str
    param: str | None = None


class WebhookState(APIModel):
    id: str
    event: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: int | None
    delivered_at: int | None


class JobObject(APIModel):
    id: str
    object: Literal["job"] = "job"
    type: str
    status: JobStatus
    created_at: int
    started_at: int | None
    finished_at: int | None
    timings: JobTimings
    attempts: int
    progress: JobProgress | None
    queue_position: int | None
    batch_id: str | None
    metadata: dict[str, str] | None
    result: JobResult | ChatJobResult | None
    error: JobError | None
    webhook: WebhookState | None


class JobList(APIModel):
    object: Literal["list"] = "list"
    data: list[JobObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class BatchCounts(APIModel):
    queued: int
    running: int
    succeeded: int
    failed: int
    canceled: int


class BatchObject(APIModel):
    id: str
    object: Literal["batch"] = "batch"
    status: BatchStatus
    created_at: int
    finished_at: int | None
    total: int
    counts: BatchCounts
    metadata: dict[str, str] | None
    job_ids: list[str] | None
    webhook: WebhookState | None


class ErrorBody(APIModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = None


class ErrorResponse(APIModel):
    error: ErrorBody


# --- validation failures -----------------------------------------------------------------

# Where a body holds a union, pydantic names the chosen member in the error's location.
_UNION_TAGS = frozenset(JobType)


def validation_error(errors: list[dict[str, Any]]) -> InvalidRequestError:
    """A body that does not fit its schema, as the envelope's 400: the first problem, with
    the path to it (`jobs.1.request.prompt`) as `param`."""
    first = errors[0] if errors else {}
    kind = first.get("type")
    if kind == "json_invalid":
        return InvalidRequestError(
            "the request body is not valid JSON", code=ErrorCode.INVALID_JSON
        )
    # Parts can be the client's own keys: keep each short.
    location = [
        str(part)[:64]
        for part in first.get("loc", ())
        if part != "body" and part not in _UNION_TAGS
    ]
    message = first.get("msg", "invalid request")
    if kind == "extra_forbidden":
        message = "unknown parameter"
    elif kind == "missing":
        message = "missing required parameter"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        location.append(first.get("ctx", {}).get("discriminator", "type").strip("'"))
        message = f"must be one of {', '.join(JobType)}"
    param = ".".join(location) or None
    return InvalidRequestError(
        f"{param}: {message}" if param else message,
        code=ErrorCode.INVALID_PARAMETER,
        param=param,
    )
