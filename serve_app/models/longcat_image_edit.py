"""LongCat-Image-Edit: a FLUX-style DiT conditioned on Qwen2.5-VL.

One call takes one prompt and one image; a request's n images come from that call
(num_images_per_prompt), so requests never share a call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers.pipelines.longcat_image.pipeline_longcat_image_edit as longcat_module
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    LongCatImageEditPipeline,
    LongCatImageTransformer2DModel,
)
from PIL import Image

from serve_app.models.edit_base import ImageEditFamily, module_attribute
from serve_app.models.qwen_vl import (
    load_pipeline_with_processor,
    mark_processor_as_upstream,
    tiny_vl_processor,
    tiny_vl_text_encoder,
    tiny_vl_tokenizer,
)
from serve_app.models.spec import EditSpec
from serve_app.models.tiny_vae import tiny_vae


class LongCatImageEditFamily(ImageEditFamily):
    name = "longcat-image-edit"

    def pipeline_class(self) -> type:
        return LongCatImageEditPipeline

    def load(self, path: str | Path, torch_dtype: torch.dtype) -> Any:
        return load_pipeline_with_processor(
            self.pipeline_class(), path, "text_processor", torch_dtype
        )

    def call_arguments(self, specs: list[EditSpec]) -> dict[str, Any]:
        (spec,) = specs
        return {
            "prompt": spec.prompt,
            "image": Image.fromarray(spec.images[0]),
            "negative_prompt": spec.negative_prompt or "",
            "num_inference_steps": spec.steps,
            "guidance_scale": spec.guidance_scale,
            "num_images_per_prompt": spec.n,
        }

    def call_pipeline(self, pipeline: Any, arguments: dict[str, Any]) -> Any:
        # The pipeline has no size arguments and would work at ~1 MP; keep the working size.
        image = arguments["image"]
        size = (image.width, image.height)
        with module_attribute(longcat_module, "calculate_dimensions", lambda _area, _ratio: size):
            return pipeline(**arguments)

    def build_tiny(self, folder: Path) -> None:
        tokenizer = tiny_vl_tokenizer()
        text_encoder = tiny_vl_text_encoder(tokenizer)
        torch.manual_seed(0)
        transformer = LongCatImageTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 6, 6],
        )
        pipeline = LongCatImageEditPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=tiny_vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_processor=tiny_vl_processor(tokenizer),
            transformer=transformer,
        )
        pipeline.save_pretrained(folder, safe_serialization=True)
        mark_processor_as_upstream(folder, "text_processor")
