"""Any diffusers pipeline `AutoPipelineForText2Image` or `AutoPipelineForImage2Image` can
load, with no code of its own (families `diffusers` and `diffusers-image-to-image`).

What a call passes is what the checkpoint's pipeline takes: its `__call__` is read at
load time, a request's negative prompt reaches only a pipeline that accepts one (else
a 400 names it), and the size is checked on the way out. Requests run alone unless the
model's config declares shared calls safe (`batching.shared_calls: true`), since an
unknown pipeline may mix a batch's prompts. The tiny build is a Stable Diffusion
checkpoint, which both AutoPipelines load.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

from serve_app.errors import ErrorCode, InvalidRequestError
from serve_app.models.base import (
    StepHook,
    TextToImageFamily,
    check_one_batch_key,
    seeded_generators,
    to_uint8,
)
from serve_app.models.edit_base import ImageEditFamily
from serve_app.models.spec import EditSpec, GenerationSpec
from serve_app.models.stable_diffusion import StableDiffusionFamily


def accepted_arguments(pipeline: Any) -> set[str]:
    return set(inspect.signature(pipeline.__call__).parameters)


def supported(pipeline: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` less what the pipeline's call does not take; a negative prompt it
    cannot take is the caller's to drop, not ours to ignore."""
    accepted = accepted_arguments(pipeline)
    if arguments.get("negative_prompt") is not None and "negative_prompt" not in accepted:
        raise InvalidRequestError(
            f"this model's pipeline ({type(pipeline).__name__}) takes no negative prompt",
            code=ErrorCode.UNSUPPORTED_PARAMETER,
            param="negative_prompt",
        )
    return {key: value for key, value in arguments.items() if key in accepted}


def check_sizes(images: Any, width: int, height: int, pipeline: Any) -> None:
    """A pipeline that sized its output on its own terms is an operator's config error."""
    made = np.asarray(images).shape[1:3]
    if made != (height, width):
        raise RuntimeError(
            f"{type(pipeline).__name__} made {made[1]}x{made[0]} images where "
            f"{width}x{height} was asked; set the model's limits to sizes it keeps"
        )


class GenericTextToImageFamily(TextToImageFamily):
    name = "diffusers"

    def pipeline_class(self) -> type:
        return AutoPipelineForText2Image

    def build_tiny(self, folder: Path) -> None:
        StableDiffusionFamily().build_tiny(folder)

    def run(
        self, pipeline: Any, specs: list[GenerationSpec], on_step: StepHook | None = None
    ) -> list[np.ndarray]:
        check_one_batch_key(specs)
        first = specs[0]
        negatives = None
        if any(spec.negative_prompt for spec in specs):
            negatives = [spec.negative_prompt or "" for spec in specs for _ in spec.seeds]
        arguments = {
            "prompt": [spec.prompt for spec in specs for _ in spec.seeds],
            "negative_prompt": negatives,
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
        }
        output = pipeline(
            **supported(pipeline, arguments),
            generator=seeded_generators(specs),
            output_type="np",
        )
        check_sizes(output.images, first.width, first.height, pipeline)
        return to_uint8(output.images)


class GenericImageToImageFamily(ImageEditFamily):
    name = "diffusers-image-to-image"

    def pipeline_class(self) -> type:
        return AutoPipelineForImage2Image

    def build_tiny(self, folder: Path) -> None:
        StableDiffusionFamily().build_tiny(folder)

    def call_arguments(self, specs: list[EditSpec]) -> dict[str, Any]:
        first = specs[0]
        negatives = None
        if any(spec.negative_prompt for spec in specs):
            negatives = self.negative_prompts_per_image(specs)
        return {
            "prompt": self.prompts_per_image(specs),
            "negative_prompt": negatives,
            "image": self.first_images_per_image(specs),
            # Pipelines that size their output from arguments get the working size; the
            # others make it from the image, which the Gateway brought to that size.
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
        }

    def call_pipeline(self, pipeline: Any, arguments: dict[str, Any]) -> Any:
        fixed = {key: arguments.pop(key) for key in ("generator", "output_type")}
        output = pipeline(**supported(pipeline, arguments), **fixed)
        check_sizes(output.images, arguments["width"], arguments["height"], pipeline)
        return output
