"""GLM-Image: an autoregressive model writes image tokens, a DiT decodes them into latents.

The autoregressive (AR) stage, `GlmImageForConditionalGeneration`, reads the prompt and samples
a small preview grid of image tokens followed by a grid with one token per 32x32 pixels. The
DiT denoises VAE latents conditioned on those tokens and on ByT5 embeddings of any quoted text
in the prompt (the "glyphs" to render).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    GlmImagePipeline,
    GlmImageTransformer2DModel,
)
from transformers import (
    ByT5Tokenizer,
    GenerationConfig,
    GlmImageConfig,
    GlmImageForConditionalGeneration,
    GlmImageImageProcessorPil,
    GlmImageProcessor,
    Qwen2Tokenizer,
    T5Config,
    T5EncoderModel,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from serve_app.models.base import TextToImageFamily
from serve_app.models.spec import GenerationSpec
from serve_app.models.tiny_vae import tiny_vae

# Image tokens the tiny AR model can write; the real codebook has 16384.
CODEBOOK_SIZE = 64
# Like the real vocabulary, token ids 0..CODEBOOK_SIZE-1 are image tokens and the next two
# open and close an image.
IMAGE_START_TOKEN = f"<|dit_token_{CODEBOOK_SIZE}|>"
IMAGE_END_TOKEN = f"<|dit_token_{CODEBOOK_SIZE + 1}|>"
# The processor's chat template: text-to-image messages carry only the prompt text, and the
# processor itself appends the target grid sizes and the image start token.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% for item in message.content %}"
    "{% if item.type == 'image' %}"
    + IMAGE_START_TOKEN
    + "<|image|>"
    + IMAGE_END_TOKEN
    + "{% elif item.type == 'text' %}{{ item.text }}{% endif %}"
    "{% endfor %}{% endfor %}"
)


def glm_tokenizer() -> Qwen2Tokenizer:
    """A byte-level tokenizer with the GLM-Image AR model's special tokens."""
    vocab = {f"<|dit_token_{i}|>": i for i in range(CODEBOOK_SIZE + 2)}
    for symbol in bytes_to_unicode().values():
        vocab[symbol] = len(vocab)
    for special in ("<sop>", "<eop>", "<|image|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        bos_token=IMAGE_START_TOKEN,
        eos_token=IMAGE_END_TOKEN,
        pad_token="<|endoftext|>",
        # GlmImageProcessor reads these three: "<sop>H W<eop>" gives a grid size in tokens.
        image_token="<|image|>",
        grid_bos_token="<sop>",
        grid_eos_token="<eop>",
        # A batch of prompts is left-padded so every row's generated tokens start together.
        padding_side="left",
    )


class GlmImageFamily(TextToImageFamily):
    name = "glm-image"

    def pipeline_class(self) -> type:
        return GlmImagePipeline

    def call_arguments(
        self, first: GenerationSpec, prompts: list[str], negative_prompts: list[str] | None
    ) -> dict[str, Any]:
        # negative_prompts is dropped: GlmImagePipeline has no such argument.
        return {
            "prompt": list(prompts),
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
        }

    def vae_input(self, pipeline: Any, latents: torch.Tensor, vae: Any) -> torch.Tensor:
        if vae is not pipeline.vae:  # a preview decoder reads raw latents
            return super().vae_input(pipeline, latents, vae)
        # The pipeline un-normalises by mean and std only, without the scaling factor.
        config = vae.config
        shape = (1, config.latent_channels, 1, 1)
        mean = torch.tensor(config.latents_mean, dtype=latents.dtype).view(shape)
        std = torch.tensor(config.latents_std, dtype=latents.dtype).view(shape)
        return latents * std.to(latents.device) + mean.to(latents.device)

    def build_tiny(self, folder: Path) -> None:
        torch.manual_seed(0)
        # Glyph encoder: ByT5 needs no vocabulary file, its ids are bytes.
        tokenizer = ByT5Tokenizer()
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=32,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )

        # AR model. The image processor only matters for image-to-image; it is the PIL
        # backend so that neither building nor loading needs torchvision.
        ar_tokenizer = glm_tokenizer()
        processor = GlmImageProcessor(
            image_processor=GlmImageImageProcessorPil(
                patch_size=16, temporal_patch_size=1, merge_size=1
            ),
            tokenizer=ar_tokenizer,
            chat_template=CHAT_TEMPLATE,
        )
        vision_language_encoder = GlmImageForConditionalGeneration(
            GlmImageConfig(
                text_config={
                    "vocab_size": len(ar_tokenizer),
                    "hidden_size": 32,
                    "intermediate_size": 32,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "num_key_value_heads": 1,
                    "max_position_embeddings": 512,
                    # The LM head covers the codebook only, so the random model never closes
                    # the image early and always writes the full grid the pipeline reads back.
                    "vision_vocab_size": CODEBOOK_SIZE,
                    # Rotary dims per (temporal, height, width) axis: half the head dim of 16.
                    "rope_parameters": {
                        "rope_type": "default",
                        "rope_theta": 10000.0,
                        "mrope_section": [4, 2, 2],
                    },
                    "pad_token_id": ar_tokenizer.pad_token_id,
                    "eos_token_id": ar_tokenizer.eos_token_id,
                },
                vision_config={
                    "depth": 1,
                    "hidden_size": 32,
                    "num_heads": 2,
                    "image_size": 32,
                    "patch_size": 16,
                    "intermediate_size": 32,
                },
                vq_config={"embed_dim": 32, "num_embeddings": CODEBOOK_SIZE, "latent_channels": 32},
                image_token_id=ar_tokenizer.convert_tokens_to_ids("<|image|>"),
                image_start_token_id=ar_tokenizer.bos_token_id,
                image_end_token_id=ar_tokenizer.eos_token_id,
            )
        )
        # The pipeline calls generate(do_sample=True); sample like the released checkpoint does.
        vision_language_encoder.generation_config = GenerationConfig(
            do_sample=True,
            temperature=0.9,
            top_p=0.75,
            bos_token_id=ar_tokenizer.bos_token_id,
            eos_token_id=ar_tokenizer.eos_token_id,
            pad_token_id=ar_tokenizer.pad_token_id,
        )

        transformer = GlmImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            text_embed_dim=text_encoder.config.d_model,
            time_embed_dim=16,
            condition_dim=8,
            prior_vq_quantizer_codebook_size=CODEBOOK_SIZE,
        )
        # Four blocks like the real VAE, so the 8x spatial factor is the real one.
        # The pipeline un-normalises latents with these before decoding.
        vae = tiny_vae(latent_channels=16, latents_mean=[0.0] * 16, latents_std=[1.0] * 16)
        # The pipeline passes a resolution-dependent `mu` built from these shift settings.
        scheduler = FlowMatchEulerDiscreteScheduler(
            use_dynamic_shifting=True,
            base_image_seq_len=256,
            base_shift=0.25,
            max_shift=0.75,
            time_shift_type="linear",
        )
        pipeline = GlmImagePipeline(
            tokenizer=tokenizer,
            processor=processor,
            text_encoder=text_encoder,
            vision_language_encoder=vision_language_encoder,
            vae=vae,
            transformer=transformer,
            scheduler=scheduler,
        )
        pipeline.save_pretrained(folder, safe_serialization=True)
