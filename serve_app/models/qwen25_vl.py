"""Qwen2.5-VL as a vision-chat model: the second family through the same code as GLM-4.6V
(same seam: checkpoint, processor, chat template, batched `generate`)."""

from __future__ import annotations

from pathlib import Path

from transformers import GenerationConfig, Qwen2VLImageProcessor
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

from serve_app.models.qwen_vl import tiny_vl_processor, tiny_vl_text_encoder, tiny_vl_tokenizer
from serve_app.models.vision_chat import VisionChatFamily, image_only

# Qwen2.5-VL's template, reduced to what chat needs: roles, text and image placeholders.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part.type == 'text' %}{{ part.text }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen25VLChatFamily(VisionChatFamily):
    name = "qwen2.5-vl"
    model_classes = ("Qwen2_5_VLForConditionalGeneration",)
    processor_class = Qwen2_5_VLProcessor
    image_processor_class = Qwen2VLImageProcessor

    def build_tiny(self, folder: Path) -> None:
        tokenizer = tiny_vl_tokenizer()
        tokenizer.padding_side = "left"
        model = tiny_vl_text_encoder(tokenizer)
        model.generation_config = GenerationConfig(
            eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id
        )
        image_processor = tiny_vl_processor(tokenizer).image_processor
        processor = image_only(Qwen2_5_VLProcessor)(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=TINY_CHAT_TEMPLATE,
        )
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
