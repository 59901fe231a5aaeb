"""Z-Image (e.g. Z-Image-Turbo): a single-stream DiT conditioned on a Qwen3 text encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from transformers import Qwen3Config, Qwen3Model

from serve_app.models.base import TextToImageFamily
from serve_app.models.spec import GenerationSpec
from serve_app.models.tiny_tokenizers import qwen_tokenizer
from serve_app.models.tiny_vae import tiny_vae


class ZImageFamily(TextToImageFamily):
    name = "z-image"

    def pipeline_class(self) -> type:
        return ZImagePipeline

    def call_arguments(
        self, first: GenerationSpec, prompts: list[str], negative_prompts: list[str] | None
    ) -> dict[str, Any]:
        arguments = super().call_arguments(first, prompts, negative_prompts)
        # The pipeline rewrites its prompt lists in place: hand it copies.
        arguments["prompt"] = list(prompts)
        if negative_prompts is not None:
            arguments["negative_prompt"] = list(negative_prompts)
        return arguments

    def build_tiny(self, folder: Path) -> None:
        torch.manual_seed(0)
        tokenizer = qwen_tokenizer()
        text_encoder = Qwen3Model(
            Qwen3Config(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                max_position_embeddings=1024,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=16,
            dim=32,
            n_layers=2,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            cap_feat_dim=32,
            axes_dims=[4, 6, 6],
            axes_lens=[256, 128, 128],
        )
        vae = tiny_vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159)
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
        pipeline = ZImagePipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
        pipeline.save_pretrained(folder, safe_serialization=True)
