"""Request and response schemas of the HTTP API, OpenAI-compatible where OpenAI has a shape."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class APIModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageGenerationRequest(APIModel):
    """POST /v1/images/generations: OpenAI's fields, then this service's extensions."""

    model: str | None = Field(None, description="Model name; the first configured model if unset.")
    prompt: str = Field(max_length=32000)
    n: int = Field(1, ge=1, le=10)
    size: str = Field("auto", description="'WxH' (e.g. '1024x768') or 'auto'.")
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(None, ge=0, le=100)
    user: str | None = Field(None, max_length=256)
    # Accepted for SDK compatibility; the diffusion models have no such switch.
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None
    background: Literal["auto", "opaque"] | None = None
    moderation: Literal["auto", "low"] | None = None

    # Extensions.
    negative_prompt: str | None = Field(None, max_length=8000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0)
    template: str | None = None
    variables: dict[str, str] = Field(default_factory=dict, max_length=32)
    style: str | None = None
    brand: str | None = None


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


class ErrorBody(APIModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = None


class ErrorResponse(APIModel):
    error: ErrorBody
