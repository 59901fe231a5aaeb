"""The Qwen2.5-VL parts that Qwen-Image-Edit and LongCat-Image-Edit share: a processor
that needs no torchvision, and a tiny text encoder built offline.

transformers 5 will not build `Qwen2VLProcessor` without torchvision, because its video
processor needs it. The edit pipelines never pass videos, so we build the processor
from its tokenizer and image processor alone; a checkpoint's `processor/` folder (or
`text_processor/` for LongCat) holds exactly those files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)

from serve_app.models.tiny_tokenizers import qwen_tokenizer
from serve_app.models.vision_chat import image_only

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


# Saved as a real checkpoint's processor folder lays it out, less the video config.
ImageOnlyQwen2VLProcessor = image_only(Qwen2VLProcessor)


def load_processor(folder: str | Path) -> ImageOnlyQwen2VLProcessor:
    return ImageOnlyQwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor.from_pretrained(str(folder)),
        tokenizer=AutoTokenizer.from_pretrained(str(folder)),
        video_processor=None,
    )


def load_pipeline_with_processor(
    pipeline_class: type, checkpoint: str | Path, component: str, torch_dtype: torch.dtype
) -> Any:
    """from_pretrained with the processor component built here instead of by transformers."""
    processor = load_processor(processor_folder(checkpoint, component))
    return pipeline_class.from_pretrained(
        str(checkpoint), **{component: processor}, dtype=torch_dtype
    )


def processor_folder(checkpoint: str | Path, component: str) -> str:
    """Where a local checkpoint keeps a component; hub ids resolve through their cache."""
    local = Path(checkpoint) / component
    if local.is_dir():
        return str(local)
    from huggingface_hub import snapshot_download

    return str(
        Path(snapshot_download(str(checkpoint), allow_patterns=[f"{component}/*"])) / component
    )


def mark_processor_as_upstream(folder: Path, component: str) -> None:
    """Record the processor in model_index.json under the class real checkpoints name."""
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index[component] = ["transformers", "Qwen2VLProcessor"]
    index_path.write_text(json.dumps(index, indent=2))


def tiny_vl_tokenizer() -> Qwen2Tokenizer:
    tokenizer = qwen_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": list(VISION_TOKENS)})
    return tokenizer


def tiny_vl_processor(tokenizer: Qwen2Tokenizer) -> ImageOnlyQwen2VLProcessor:
    # A few dozen vision tokens per image keep the tiny text encoder fast.
    image_processor = Qwen2VLImageProcessor(
        min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    return ImageOnlyQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None
    )


def tiny_vl_text_encoder(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(0)
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
            "in_chans": 3,
        },
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
    )
    return Qwen2_5_VLForConditionalGeneration(config)
