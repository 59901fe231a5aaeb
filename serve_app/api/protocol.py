"""Request and response schemas of the HTTP API, OpenAI-compatible where OpenAI has a shape."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class APIModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageRequest(APIModel):
    """What generation and edit requests share: OpenAI's fields, then our extensions."""

    model: str | None = Field(None, description="Model name; the first of its task if unset.")
    prompt: str = Field(max_length=32000)
    n: int = Field(1, ge=1, le=10)
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(None, ge=0, le=100)
    user: str | None = Field(None, max_length=256)
    # Accepted for SDK compatibility; the diffusion models have no such switch.
    background: Literal["auto", "opaque"] | None = None

    # Extensions.
    negative_prompt: str | None = Field(None, max_length=8000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0)
    style: str | None = None
    brand: str | None = None


class ImageGenerationRequest(ImageRequest):
    """POST /v1/images/generations."""

    size: str = Field("auto", description="'WxH' (e.g. '1024x768') or 'auto'.")
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None
    moderation: Literal["auto", "low"] | None = None
    template: str | None = None
    variables: dict[str, str] = Field(default_factory=dict, max_length=32)


class ImageReference(APIModel):
    """An input image in a JSON body: an https (or data:) URL, or bare base64."""

    image_url: str | None = Field(None, max_length=96 << 20)
    b64_json: str | None = Field(None, max_length=96 << 20)

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageReference:
        if (self.image_url is None) == (self.b64_json is None):
            raise ValueError("give exactly one of image_url or b64_json")
        return self


class ImageEditRequest(ImageRequest):
    """POST /v1/images/edits. Multipart (as the OpenAI SDK sends it) carries the images as
    files `image` / `image[]` / `mask`; JSON carries them in `images` and `mask`."""

    images: list[ImageReference] = Field(default_factory=list, max_length=16)
    mask: ImageReference | None = Field(
        None, description="Transparent (or white) where the edit may change the picture."
    )
    size: str = Field("auto", description="'WxH' (the input is cropped to it) or 'auto'.")
    quality: Literal["auto", "standard", "low", "medium", "high"] | None = None
    input_fidelity: Literal["high", "low"] | None = None
    # InstructPix2Pix: how closely the edit keeps to the input image.
    image_guidance_scale: float | None = Field(None, ge=0)


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


class ModelCard(APIModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "image-serving"
    task: str
    family: str
    description: str = ""
    default_size: str
    max_n: int
    max_side: int
    max_steps: int


class ModelList(APIModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- jobs and batches -------------------------------------------------------------------

JobType = Literal["image_generation", "image_edit", "chat"]


def _small_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None and (
        len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
    ):
        raise ValueError("at most 16 keys of up to 64 characters, values up to 512")
    return value


Metadata = Annotated[
    dict[str, str] | None,
    AfterValidator(_small_metadata),
    Field(description="Up to 16 keys (64 chars) and values (512 chars), echoed back."),
]


class JobItem(APIModel):
    type: JobType
    request: dict[str, Any] = Field(
        description="The body the sync route takes: /v1/images/generations for "
        "image_generation, the JSON form of /v1/images/edits for image_edit."
    )
    metadata: Metadata = None


class JobCreateRequest(JobItem):
    """POST /v1/jobs."""

    callback_url: str | None = Field(
        None, max_length=2048, description="Told when the job ends (Standard Webhooks)."
    )


class BatchCreateRequest(APIModel):
    """POST /v1/batches: many jobs at once, one webhook when the last one ends."""

    jobs: list[JobItem] = Field(min_length=1)
    callback_url: str | None = Field(None, max_length=2048)
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
    status: Literal["pending", "delivered", "failed", "disabled"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: int | None
    delivered_at: int | None


class JobObject(APIModel):
    id: str
    object: Literal["job"] = "job"
    type: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    created_at: int
    started_at: int | None
    finished_at: int | None
    timings: JobTimings
    attempts: int
    progress: JobProgress | None
    queue_position: int | None
    batch_id: str | None
    metadata: dict[str, str] | None
    result: JobResult | None
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
    status: Literal["in_progress", "completed"]
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
