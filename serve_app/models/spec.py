"""What the Gateway asks of a model replica: one plain, picklable object per request."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AdapterUse:
    """A LoRA adapter a request applies, as the catalog names it, at the request's scale."""

    name: str
    # What the replica loads: a folder, a `.safetensors` file, a hub id, or `tiny:<seed>`.
    source: str
    weight_name: str | None
    scale: float


def adapter_set_id(adapters: tuple[AdapterUse, ...]) -> str:
    """What a request's adapters need loaded, whatever their scales: requests with the same
    id are routed to a replica that holds that set ("" for none)."""
    if not adapters:
        return ""
    identity = "\0".join(f"{a.name}\0{a.source}\0{a.weight_name or ''}" for a in adapters)
    return "loras-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GenerationSpec:
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    # One seed per image; the request asks for len(seeds) images.
    seeds: tuple[int, ...]
    # How the replica encodes the result; not part of the batch key.
    output_format: str = "png"
    output_compression: int | None = None
    # Set for a durable job: the replica reports its steps to the job store.
    job_id: str | None = None
    # Previews of each image to send while it forms (0-3); not part of the batch key.
    partial_images: int = 0
    # LoRA adapters, sorted by name; a pipeline call applies one set to every image.
    adapters: tuple[AdapterUse, ...] = ()

    @property
    def n(self) -> int:
        return len(self.seeds)

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call."""
        return (self.width, self.height, self.steps, self.guidance_scale, self.adapters)


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    seed: int
    width: int
    height: int


@dataclass(frozen=True)
class StreamAccepted:
    """A stream's first item: the replica has queued the request."""


@dataclass(frozen=True)
class PartialImage:
    """A preview of one image of a request while it forms, encoded like the final one."""

    # Which of the request's images (0 .. n-1), and which of its previews (0-based).
    index: int
    partial_image_index: int
    data: bytes
    # The preview's own size: smaller than the final image where previews are scaled.
    width: int
    height: int
    # The denoising step it shows, of `steps`.
    step: int
    steps: int
    output_format: str = "png"


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    # Images in the pipeline call this request shared (1 = ran alone; 0 = none ran).
    batch_images: int
    # For a request the result cache keeps: "hit" (answered from it) or "miss".
    cache: str | None = None


@dataclass(frozen=True, eq=False)
class EditSpec:
    """One edit request, its images already decoded and sized by the Gateway."""

    prompt: str
    negative_prompt: str | None
    # HxWx3 uint8 arrays; the first sets the output size.
    images: tuple[np.ndarray, ...]
    # HxW uint8 at the first image's size, 255 where the edit may change pixels.
    mask: np.ndarray | None
    steps: int
    guidance_scale: float
    # How closely InstructPix2Pix keeps to the input image; other families ignore it.
    image_guidance_scale: float | None
    seeds: tuple[int, ...]
    output_format: str = "png"
    output_compression: int | None = None
    job_id: str | None = None
    partial_images: int = 0
    adapters: tuple[AdapterUse, ...] = ()

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def width(self) -> int:
        return int(self.images[0].shape[1])

    @property
    def height(self) -> int:
        return int(self.images[0].shape[0])

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call: same image shapes,
        same schedule, same guidance (CFG on/off follows from it)."""
        return (
            tuple(image.shape for image in self.images),
            self.steps,
            self.guidance_scale,
            self.image_guidance_scale,
            self.adapters,
        )
