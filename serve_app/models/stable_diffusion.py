"""Stable Diffusion 1.x/2.x and SDXL: AutoPipelineForText2Image picks the pipeline class
from the checkpoint's model_index.json."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoPipelineForText2Image,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from serve_app.models.base import TextToImageFamily
from serve_app.models.tiny_tokenizers import clip_tokenizer
from serve_app.models.tiny_vae import tiny_vae


class StableDiffusionFamily(TextToImageFamily):
    name = "stable-diffusion"
    size_multiple = 8

    def pipeline_class(self) -> type:
        return AutoPipelineForText2Image

    def build_tiny(self, folder: Path) -> None:
        torch.manual_seed(0)
        tokenizer = clip_tokenizer()
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
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
