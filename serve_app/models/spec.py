"""What the Gateway asks of a text-to-image replica: one plain, picklable object per request."""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def n(self) -> int:
        return len(self.seeds)

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call."""
        return (self.width, self.height, self.steps, self.guidance_scale)


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    seed: int
    width: int
    height: int


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    # Images in the pipeline call this request shared (1 = ran alone).
    batch_images: int
