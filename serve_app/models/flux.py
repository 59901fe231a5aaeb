"""FLUX.1 (dev and schnell) text-to-image and FLUX.1 Kontext instruction editing: an MMDiT
conditioned on CLIP's pooled embedding and T5's token embeddings.

FLUX.1-dev and Kontext are guidance-distilled: `guidance_scale` is an input of the
transformer (one call per step, no CFG), and there is no negative prompt. FLUX.1-schnell
has no guidance input at all and ignores it. T5 pads every prompt to the same length
without a mask, so prompts share a call as they are, and each image has its own seeded
generator: a batched image equals its solo run (tests/unit/test_dit_text_to_image.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)
from transformers import T5Config, T5EncoderModel

from serve_app.models.base import TextToImageFamily
from serve_app.models.edit_base import ImageEditFamily
from serve_app.models.spec import EditSpec, GenerationSpec
from serve_app.models.tiny_sd_parts import tiny_clip_text_encoder
from serve_app.models.tiny_tokenizers import clip_tokenizer, t5_tokenizer
from serve_app.models.tiny_vae import tiny_vae


def unpack_flux_latents(pipeline: Any, latents: torch.Tensor, height: int, width: int):
    """2x2-patch sequences back to (B, C, h, w), as the pipelines do before decoding."""
    return pipeline._unpack_latents(latents, height, width, pipeline.vae_scale_factor)


def save_tiny_flux(pipeline_class: type, folder: Path) -> None:
    """A random-weight FLUX.1 of the real layout (16 latent channels, 2x2 packing,
    double- then single-stream blocks, guidance embedding), tiny."""
    torch.manual_seed(0)
    tokenizer = clip_tokenizer()
    tokenizer_2 = t5_tokenizer()
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
            decoder_start_token_id=tokenizer_2.pad_token_id,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    pipeline = pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=tiny_clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)


class FluxFamily(TextToImageFamily):
    name = "flux"

    def pipeline_class(self) -> type:
        return FluxPipeline

    def call_arguments(
        self, first: GenerationSpec, prompts: list[str], negative_prompts: list[str] | None
    ) -> dict[str, Any]:
        # The family table says no negative prompt, so the service never passes one.
        return {
            "prompt": prompts,
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
        }

    def unpack_latents(
        self, pipeline: Any, latents: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        return unpack_flux_latents(pipeline, latents, height, width)

    def build_tiny(self, folder: Path) -> None:
        save_tiny_flux(FluxPipeline, folder)


class FluxKontextFamily(ImageEditFamily):
    name = "flux-kontext"

    def pipeline_class(self) -> type:
        return FluxKontextPipeline

    def call_arguments(self, specs: list[EditSpec]) -> dict[str, Any]:
        first = specs[0]
        return {
            "prompt": self.prompts_per_image(specs),
            "image": self.first_images_per_image(specs),
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
            # The pipeline rescales its output to max_area (1 MP) and its input to one of
            # Kontext's training sizes; keep the working size the Gateway prepared.
            "max_area": first.width * first.height,
            "_auto_resize": False,
        }

    def unpack_latents(
        self, pipeline: Any, latents: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        return unpack_flux_latents(pipeline, latents, height, width)

    def build_tiny(self, folder: Path) -> None:
        save_tiny_flux(FluxKontextPipeline, folder)
