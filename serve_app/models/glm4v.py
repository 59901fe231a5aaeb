"""GLM-4.6V(-Flash) and the GLM-4.1V/4.5V line: `Glm4vForConditionalGeneration`.

GLM-4.6V-Flash's config declares `Glm4vForConditionalGeneration` (model type `glm4v`);
its processor is `Glm46VProcessor`, which takes the same image processor and tokenizer
as `Glm4vProcessor`. The model thinks aloud between `<think>` and `</think>` unless the
chat template is told `enable_thinking=False`, and may wrap its final answer in box tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    Glm4vConfig,
    Glm4vForConditionalGeneration,
    Qwen2Tokenizer,
)
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil
from transformers.models.glm46v.processing_glm46v import Glm46VProcessor

from serve_app.models.tiny_tokenizers import byte_level_tokenizer
from serve_app.models.vision_chat import VisionChatFamily, image_only

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|video|>",
    "<think>",
    "</think>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
)
# The shape of GLM-4.6V's own template: one image placeholder per image part, a thinking
# block the template closes at once when thinking is off.
TINY_CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}<|{{ m.role }}|>\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif part.type == 'text' %}{{ part.text }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think></think>\n{% endif %}"
    "{% endif %}"
)


def tiny_tokenizer() -> Qwen2Tokenizer:
    """Byte-level, with GLM-4.6V's special tokens."""
    tokenizer = byte_level_tokenizer(
        SPECIAL_TOKENS,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer


class Glm4vChatFamily(VisionChatFamily):
    name = "glm-4.6v"
    model_classes = ("Glm4vForConditionalGeneration", "Glm46VForConditionalGeneration")
    processor_class = Glm46VProcessor
    image_processor_class = Glm4vImageProcessorPil
    answer_wrappers = ("<|begin_of_box|>", "<|end_of_box|>")

    def build_tiny(self, folder: Path) -> None:
        # The tiny GLM-4V of transformers' own tests, with 2x2 patch merging as the real
        # model has, so a small picture is a few dozen image tokens.
        tokenizer = tiny_tokenizer()
        token = tokenizer.convert_tokens_to_ids
        image_processor = Glm4vImageProcessorPil(
            patch_size=14,
            temporal_patch_size=2,
            merge_size=2,
            size={"shortest_edge": 4 * 28 * 28, "longest_edge": 64 * 28 * 28},
        )
        processor = image_only(Glm46VProcessor)(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=TINY_CHAT_TEMPLATE,
        )
        stop_ids = [token("<|endoftext|>"), token("<|user|>"), token("<|observation|>")]
        config = Glm4vConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 16,
                "intermediate_size": 22,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "rope_parameters": {
                    "rope_type": "default",
                    "mrope_section": [2, 1, 1],
                    "rope_theta": 10000,
                },
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": stop_ids,
            },
            vision_config={
                "depth": 2,
                "hidden_size": 48,
                "out_hidden_size": 16,
                "intermediate_size": 22,
                "num_heads": 2,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
            image_token_id=token("<|image|>"),
            video_token_id=token("<|video|>"),
            image_start_token_id=token("<|begin_of_image|>"),
            image_end_token_id=token("<|end_of_image|>"),
            video_start_token_id=token("<|begin_of_video|>"),
            video_end_token_id=token("<|end_of_video|>"),
        )
        torch.manual_seed(0)
        model = Glm4vForConditionalGeneration(config)
        model.generation_config = GenerationConfig(
            eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id
        )
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
