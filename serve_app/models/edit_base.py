"""What every instruction-editing family provides, and the one batched call they share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from serve_app.families import Batching
from serve_app.models.base import (
    PipelineFamily,
    StepHook,
    check_one_batch_key,
    seeded_generators,
    to_uint8,
)
from serve_app.models.spec import EditSpec


class ImageEditFamily(PipelineFamily):
    """An instruction-editing family.

    The Gateway hands every request over at its working size (the output size), so a
    family never resizes on its own: pipelines that would rescale to ~1 MP are told to
    keep the prepared size. Where the family batches per request, a request's n images
    still come from one call (num_images_per_prompt).
    """

    def call_arguments(self, specs: list[EditSpec]) -> dict[str, Any]:
        """Keyword arguments for one pipeline call; batch_key() equality is checked already."""
        raise NotImplementedError

    def call_pipeline(self, pipeline: Any, arguments: dict[str, Any]) -> Any:
        return pipeline(**arguments)

    def run(
        self, pipeline: Any, specs: list[EditSpec], on_step: StepHook | None = None
    ) -> list[np.ndarray]:
        """One pipeline call for specs that share a batch key; HxWx3 uint8 per image.

        Every image gets its own CPU generator seeded from its request. Where a request
        has a mask, pixels outside it are the input's own, exactly.
        """
        check_one_batch_key(specs)
        traits = self.traits
        if (
            traits.batching is Batching.PER_REQUEST
            and not traits.batching_declarable
            and len(specs) != 1
        ):
            raise ValueError(f"{self.name} runs one request per pipeline call")
        arguments = self.call_arguments(specs)
        output = self.call_pipeline(
            pipeline,
            {
                **arguments,
                **self.step_arguments(on_step),
                "generator": seeded_generators(specs),
                "output_type": "np",
            },
        )
        pixels = to_uint8(output.images)
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
