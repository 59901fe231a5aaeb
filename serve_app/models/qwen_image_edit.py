"""Qwen-Image-Edit and Qwen-Image-Edit-Plus: an MMDiT conditioned on Qwen2.5-VL, which
reads both the instruction and the input image.

Qwen-Image-Edit batches requests (one prompt and one image per output). The Plus
variant composes up to three reference images but takes one prompt per call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit_module
import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus_module
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
)
from PIL import Image

from serve_app.models.edit_base import ImageEditFamily, module_attribute
from serve_app.models.qwen_image import (
    DEFAULT_NEGATIVE_PROMPT,
    tiny_qwen_image_parts,
    unpack_qwen_latents,
)
from serve_app.models.qwen_vl import (
    load_pipeline_with_processor,
    mark_processor_as_upstream,
    tiny_vl_processor,
    tiny_vl_text_encoder,
    tiny_vl_tokenizer,
)
from serve_app.models.spec import EditSpec


class QwenImageEditFamily(ImageEditFamily):
    name = "qwen-image-edit"

    def pipeline_class(self) -> type:
        return QwenImageEditPipeline

    def load(self, path: str | Path, torch_dtype: torch.dtype) -> Any:
        return load_pipeline_with_processor(self.pipeline_class(), path, "processor", torch_dtype)

    def call_arguments(self, specs: list[EditSpec]) -> dict[str, Any]:
        first = specs[0]
        arguments: dict[str, Any] = {
            "prompt": self.prompts_per_image(specs),
            "image": self.first_images_per_image(specs),
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            # Qwen-Image-Edit is not guidance-distilled: its guidance is true CFG.
            "true_cfg_scale": first.guidance_scale,
        }
        if first.guidance_scale > 1:
            arguments["negative_prompt"] = self.negative_prompts_per_image(
                specs, empty=DEFAULT_NEGATIVE_PROMPT
            )
        return arguments

    def unpack_latents(
        self, pipeline: Any, latents: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        return unpack_qwen_latents(pipeline, latents, height, width)

    def call_pipeline(self, pipeline: Any, arguments: dict[str, Any]) -> Any:
        # The pipeline rescales the image it conditions on to ~1 MP; keep the working size.
        size = (arguments["width"], arguments["height"], None)
        with module_attribute(edit_module, "calculate_dimensions", lambda _area, _ratio: size):
            return pipeline(**arguments)

    def build_tiny(self, folder: Path) -> None:
        tokenizer = tiny_vl_tokenizer()
        text_encoder = tiny_vl_text_encoder(tokenizer)
        vae, transformer = tiny_qwen_image_parts()
        pipeline = self.pipeline_class()(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            processor=tiny_vl_processor(tokenizer),
            transformer=transformer,
        )
        pipeline.save_pretrained(folder, safe_serialization=True)
        mark_processor_as_upstream(folder, "processor")


class QwenImageEditPlusFamily(QwenImageEditFamily):
    name = "qwen-image-edit-plus"

    def pipeline_class(self) -> type:
        return QwenImageEditPlusPipeline

    def call_arguments(self, specs: list[EditSpec]) -> dict[str, Any]:
        (spec,) = specs
        arguments: dict[str, Any] = {
            "prompt": spec.prompt,
            "image": [Image.fromarray(image) for image in spec.images],
            "height": spec.height,
            "width": spec.width,
            "num_inference_steps": spec.steps,
            "true_cfg_scale": spec.guidance_scale,
            "num_images_per_prompt": spec.n,
        }
        if spec.guidance_scale > 1:
            arguments["negative_prompt"] = spec.negative_prompt or DEFAULT_NEGATIVE_PROMPT
        return arguments

    def call_pipeline(self, pipeline: Any, arguments: dict[str, Any]) -> Any:
        # Each reference is rescaled to VAE_IMAGE_SIZE pixels by its own aspect; use the
        # working area instead, so references cost what the output costs.
        area = arguments["width"] * arguments["height"]
        with module_attribute(plus_module, "VAE_IMAGE_SIZE", area):
            return pipeline(**arguments)
