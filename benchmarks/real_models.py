"""Models at their real size: the published architectures with random weights.

A GPU's time per image does not depend on weight values, so these stand in for the real
checkpoints without a download. Tokenizers are the byte-level ones the tiny models use
(real vocabularies need the hub); the text encoders keep their real vocabulary size, and
prompts are padded to the length the real pipelines pad to, so the compute is the same.

    build_checkpoint("sd15", Path("ckpt/sd15"), device="cuda")  # save_pretrained folder
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    Qwen3Config,
    Qwen3Model,
)

from serve_app.models.tiny_tokenizers import clip_tokenizer, qwen_tokenizer

CLIP_VOCAB = 49408
CLIP_L = {  # openai/clip-vit-large-patch14 text tower (SD 1.5, SDXL's first encoder)
    "vocab_size": CLIP_VOCAB,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_BIGG = {  # OpenCLIP ViT-bigG/14 text tower (SDXL's second encoder)
    "vocab_size": CLIP_VOCAB,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
KL_VAE = {  # the SD / SDXL / FLUX autoencoder layout
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "norm_num_groups": 32,
}
Z_IMAGE_TRANSFORMER = {  # Tongyi-MAI/Z-Image-Turbo transformer/config.json
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": 2560,
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
}
QWEN3_4B = {  # Z-Image-Turbo's text encoder
    "vocab_size": 151936,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
Device = str | torch.device
SD_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _clip(config: dict[str, Any], tokenizer: Any, projection: bool = False) -> torch.nn.Module:
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(
        CLIPTextConfig(
            **config,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def sd15_components(device: Device) -> dict[str, Any]:
    tokenizer = clip_tokenizer()
    with torch.device(device):
        modules = {
            "text_encoder": _clip(CLIP_L, tokenizer),
            "unet": UNet2DConditionModel(**SD15_UNET),
            "vae": AutoencoderKL(**KL_VAE, latent_channels=4, sample_size=512),
        }
    return {
        **modules,
        "tokenizer": tokenizer,
        "scheduler": EulerDiscreteScheduler(**SD_SCHEDULER, steps_offset=1),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def sdxl_components(device: Device) -> dict[str, Any]:
    tokenizer = clip_tokenizer()
    with torch.device(device):
        modules = {
            "text_encoder": _clip(CLIP_L, tokenizer),
            "text_encoder_2": _clip(CLIP_BIGG, tokenizer, projection=True),
            "unet": UNet2DConditionModel(**SDXL_UNET),
            # force_upcast is for fp16 overflow; bf16 has float32's range.
            "vae": AutoencoderKL(
                **KL_VAE,
                latent_channels=4,
                sample_size=1024,
                scaling_factor=0.13025,
                force_upcast=False,
            ),
        }
    return {
        **modules,
        "tokenizer": tokenizer,
        "tokenizer_2": clip_tokenizer(),
        "scheduler": EulerDiscreteScheduler(
            **SD_SCHEDULER, steps_offset=1, timestep_spacing="leading"
        ),
    }


def z_image_turbo_components(device: Device) -> dict[str, Any]:
    tokenizer = qwen_tokenizer()
    encoder = Qwen3Config(
        **QWEN3_4B, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    with torch.device(device):
        modules = {
            "text_encoder": Qwen3Model(encoder),
            "transformer": ZImageTransformer2DModel(**Z_IMAGE_TRANSFORMER),
            "vae": AutoencoderKL(
                **KL_VAE,
                latent_channels=16,
                sample_size=1024,
                scaling_factor=0.3611,
                shift_factor=0.1159,
                use_quant_conv=False,
                use_post_quant_conv=False,
            ),
        }
    return {
        **modules,
        "tokenizer": tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


REAL_MODELS: dict[str, tuple[Callable[[Device], dict[str, Any]], type]] = {
    "sd15": (sd15_components, StableDiffusionPipeline),
    "sdxl": (sdxl_components, StableDiffusionXLPipeline),
    "z-image-turbo": (z_image_turbo_components, ZImagePipeline),
}


def build_components(name: str, device: Device = "meta") -> dict[str, Any]:
    """The pipeline's components, with parameters created directly on `device`:
    "meta" costs nothing (shapes only), "cuda" initialises on the card in seconds."""
    components, _ = REAL_MODELS[name]
    torch.manual_seed(0)
    return components(device)


def build_checkpoint(
    name: str, folder: Path, device: str = "cuda", dtype: torch.dtype = torch.bfloat16
) -> Path:
    """Save a random-weight pipeline to `folder` (once), loadable with from_pretrained."""
    if (folder / "model_index.json").exists():
        return folder
    _, pipeline_class = REAL_MODELS[name]
    parts = build_components(name, device)
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.to(dtype)
    pipeline = pipeline_class(**parts)
    staging = folder.with_name(folder.name + ".partial")
    pipeline.save_pretrained(staging, safe_serialization=True)
    staging.rename(folder)  # a cut-off build is never mistaken for a whole one
    return folder


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
