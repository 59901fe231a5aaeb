"""Qwen-Image: text-to-image with the MMDiT and Qwen2.5-VL text encoder that Qwen-Image-Edit
builds on. Its guidance is true CFG (`true_cfg_scale`), on above 1.

Batches share one pipeline call: the prompts are padded to the longest under an attention
mask, and each image has its own seeded generator, so an image does not depend on its
neighbours (tests/unit/test_dit_text_to_image.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)

from serve_app.models.base import TextToImageFamily
from serve_app.models.qwen_vl import tiny_vl_text_encoder, tiny_vl_tokenizer
from serve_app.models.spec import GenerationSpec

# Qwen-Image's official examples turn true CFG on with a single-space negative prompt.
DEFAULT_NEGATIVE_PROMPT = " "


def unpack_qwen_latents(pipeline: Any, latents: torch.Tensor, height: int, width: int):
    """2x2-patch sequences back to (B, C, 1, h, w), as the pipelines do before decoding."""
    return pipeline._unpack_latents(latents, height, width, pipeline.vae_scale_factor)


def tiny_qwen_image_parts() -> tuple[AutoencoderKLQwenImage, QwenImageTransformer2DModel]:
    """The VAE and MMDiT of Qwen-Image (and of its edit models), random and tiny."""
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(8, 4, 4),
    )
    return vae, transformer


class QwenImageFamily(TextToImageFamily):
    name = "qwen-image"

    def pipeline_class(self) -> type:
        return QwenImagePipeline

    def call_arguments(
        self, first: GenerationSpec, prompts: list[str], negative_prompts: list[str] | None
    ) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "prompt": prompts,
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            "true_cfg_scale": first.guidance_scale,
        }
        if first.guidance_scale > 1:
            # True CFG runs only with a negative prompt; the official examples use " ".
            arguments["negative_prompt"] = [
                negative or DEFAULT_NEGATIVE_PROMPT
                for negative in (negative_prompts or [""] * len(prompts))
            ]
        return arguments

    def unpack_latents(
        self, pipeline: Any, latents: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        return unpack_qwen_latents(pipeline, latents, height, width)

    def build_tiny(self, folder: Path) -> None:
        tokenizer = tiny_vl_tokenizer()
        text_encoder = tiny_vl_text_encoder(tokenizer)
        vae, transformer = tiny_qwen_image_parts()
        pipeline = QwenImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
        pipeline.save_pretrained(folder, safe_serialization=True)
