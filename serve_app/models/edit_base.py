"""What every instruction-editing family provides, and the one batched call they share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from serve_app.models.spec import EditSpec


class ImageEditFamily:
    """One diffusers editing pipeline family: build it tiny, load it, call it for a batch.

    The Gateway hands every request over at its working size (the output size), so a
    family never resizes on its own: pipelines that would rescale to ~1 MP are told to
    keep the prepared size.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "image-edit"
    # Width and height must be multiples of this (VAE factor times patch size).
    size_multiple: ClassVar[int] = 16
    # Images one request may give (several only where the model composes references).
    max_input_images: ClassVar[int] = 1
    supports_negative_prompt: ClassVar[bool] = True
    # False where one pipeline call takes one prompt, so requests cannot share a call;
    # a request's n images still come from one call (num_images_per_prompt).
    batches_requests: ClassVar[bool] = True
    # False where a batched item can differ from the same request run alone.
    batch_equals_solo: ClassVar[bool] = True

    def pipeline_class(self) -> type:
        raise NotImplementedError

    def build_tiny(self, folder: Path) -> None:
        """Save a random-weight pipeline of this family's architecture to `folder`."""
        raise NotImplementedError

    def load(self, path: str | Path, torch_dtype: torch.dtype) -> Any:
        return self.pipeline_class().from_pretrained(str(path), dtype=torch_dtype)

    def call_arguments(self, specs: list[EditSpec]) -> dict[str, Any]:
        """Keyword arguments for one pipeline call; batch_key() equality is checked already."""
        raise NotImplementedError

    def call_pipeline(self, pipeline: Any, arguments: dict[str, Any]) -> Any:
        return pipeline(**arguments)

    def run(self, pipeline: Any, specs: list[EditSpec]) -> list[np.ndarray]:
        """One pipeline call for specs that share a batch key; HxWx3 uint8 per image.

        Every image gets its own CPU generator seeded from its request. Where a request
        has a mask, pixels outside it are the input's own, exactly.
        """
        first = specs[0]
        if any(spec.batch_key() != first.batch_key() for spec in specs):
            raise ValueError("specs in one pipeline call must share a batch key")
        if not self.batches_requests and len(specs) != 1:
            raise ValueError(f"{self.name} runs one request per pipeline call")
        generators = [
            torch.Generator("cpu").manual_seed(seed) for spec in specs for seed in spec.seeds
        ]
        output = self.call_pipeline(
            pipeline, {**self.call_arguments(specs), "generator": generators, "output_type": "np"}
        )
        images = np.asarray(output.images)
        pixels = list((images * 255).round().clip(0, 255).astype(np.uint8))
        offset = 0
        for spec in specs:
            for index in range(offset, offset + spec.n):
                pixels[index] = keep_outside_mask(pixels[index], spec)
            offset += spec.n
        return pixels

    # Helpers for call_arguments: one entry per image to make, in request order.
    @staticmethod
    def prompts_per_image(specs: list[EditSpec]) -> list[str]:
        return [spec.prompt for spec in specs for _ in spec.seeds]

    @staticmethod
    def negative_prompts_per_image(specs: list[EditSpec], empty: str = "") -> list[str]:
        return [spec.negative_prompt or empty for spec in specs for _ in spec.seeds]

    @staticmethod
    def first_images_per_image(specs: list[EditSpec]) -> list[Image.Image]:
        return [Image.fromarray(spec.images[0]) for spec in specs for _ in spec.seeds]


def keep_outside_mask(edited: np.ndarray, spec: EditSpec) -> np.ndarray:
    """Blend by the mask: 255 takes the edit, 0 keeps the input pixel as it was."""
    if spec.mask is None:
        return edited
    original = spec.images[0]
    if edited.shape != original.shape:
        raise ValueError(f"edit output {edited.shape} does not match input {original.shape}")
    alpha = (spec.mask.astype(np.float32) / 255.0)[..., None]
    blended = edited.astype(np.float32) * alpha + original.astype(np.float32) * (1 - alpha)
    return blended.round().clip(0, 255).astype(np.uint8)


@contextlib.contextmanager
def module_attribute(module: ModuleType, name: str, value: Any) -> Iterator[None]:
    """Swap a pipeline module's sizing helper or constant for one call.

    Some pipelines hard-code a ~1 MP working area in module-level code; the engine runs
    one call at a time per replica, so the swap cannot leak into another call.
    """
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)
