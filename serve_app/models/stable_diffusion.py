"""Stable Diffusion 1.x/2.x and SDXL: AutoPipelineForText2Image picks the pipeline class
from the checkpoint's model_index.json."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoPipelineForText2Image,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
)

from serve_app.models.base import TextToImageFamily
from serve_app.models.tiny_sd_parts import tiny_clip_text_encoder, tiny_unet
from serve_app.models.tiny_tokenizers import clip_tokenizer
from serve_app.models.tiny_vae import tiny_vae


class StableDiffusionFamily(TextToImageFamily):
    name = "stable-diffusion"

    def pipeline_class(self) -> type:
        return AutoPipelineForText2Image

    def build_tiny(self, folder: Path) -> None:
        torch.manual_seed(0)
        tokenizer = clip_tokenizer()
        text_encoder = tiny_clip_text_encoder(tokenizer)
        unet = tiny_unet(in_channels=4)
        vae = tiny_vae(latent_channels=4)
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        )
        pipeline = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipeline.save_pretrained(folder, safe_serialization=True)
