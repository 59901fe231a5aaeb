"""InstructPix2Pix: Stable Diffusion whose UNet also sees the input image's latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    EulerAncestralDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
)

from serve_app.models.edit_base import ImageEditFamily
from serve_app.models.spec import EditSpec
from serve_app.models.tiny_sd_parts import tiny_clip_text_encoder, tiny_unet
from serve_app.models.tiny_tokenizers import clip_tokenizer
from serve_app.models.tiny_vae import tiny_vae


class InstructPix2PixFamily(ImageEditFamily):
    name = "instruct-pix2pix"

    def pipeline_class(self) -> type:
        return StableDiffusionInstructPix2PixPipeline

    def call_arguments(self, specs: list[EditSpec]) -> dict[str, Any]:
        first = specs[0]
        return {
            # One prompt and one image per output image; the pipeline sizes the output
            # from the image, which the Gateway already made the working size.
            "prompt": self.prompts_per_image(specs),
            "image": self.first_images_per_image(specs),
            # A plain string with a prompt list fails in the pipeline: always a list.
            "negative_prompt": self.negative_prompts_per_image(specs),
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
            "image_guidance_scale": (
                1.5 if first.image_guidance_scale is None else first.image_guidance_scale
            ),
        }

    def build_tiny(self, folder: Path) -> None:
        torch.manual_seed(0)
        tokenizer = clip_tokenizer()
        text_encoder = tiny_clip_text_encoder(tokenizer)
        unet = tiny_unet(in_channels=8)
        pipeline = StableDiffusionInstructPix2PixPipeline(
            vae=tiny_vae(latent_channels=4),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=EulerAncestralDiscreteScheduler(
                beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
            ),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipeline.save_pretrained(folder, safe_serialization=True)
