"""What every vision-chat family provides: a tiny offline build, loading a checkpoint
(model and processor), and turning a conversation into the model's prompt.

A family is a transformers image-text-to-text model. Its processor is built here from
its image processor and tokenizer alone: since transformers 5.4 a VLM processor builds
a video processor eagerly, and that wants torchvision, which this service does not
install (the CPU build has none here, and chat never takes videos).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers

from serve_app.families import FAMILIES, FamilyTraits

CHAT_TEMPLATE_FILE = "chat_template.jinja"


def image_only(processor_class: type) -> type:
    """`processor_class` without a video processor, saved as a checkpoint lays it out."""

    class ImageOnlyProcessor(processor_class):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def save_pretrained(self, save_directory, **kwargs) -> None:
            self.image_processor.save_pretrained(save_directory)
            self.tokenizer.save_pretrained(save_directory)
            if self.chat_template:
                (Path(save_directory) / CHAT_TEMPLATE_FILE).write_text(self.chat_template)

    ImageOnlyProcessor.__name__ = f"ImageOnly{processor_class.__name__}"
    return ImageOnlyProcessor


@dataclass
class ChatModel:
    model: Any
    processor: Any

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer


class VisionChatFamily:
    """One transformers image-text-to-text family."""

    name: ClassVar[str]
    traits: ClassVar[FamilyTraits]
    # The architectures (config.json `architectures`) this family serves.
    model_classes: ClassVar[tuple[str, ...]]
    processor_class: ClassVar[type]
    image_processor_class: ClassVar[type]
    # Tokens that wrap an answer (not part of it) and are dropped from it.
    answer_wrappers: ClassVar[tuple[str, ...]] = ()
    # A tiny build is complete once this file exists.
    checkpoint_marker: ClassVar[str] = "config.json"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.traits = FAMILIES[cls.name]

    def build_tiny(self, folder: Path) -> None:
        raise NotImplementedError

    def load(self, path: str | Path, torch_dtype: torch.dtype) -> ChatModel:
        folder = local_folder(path)
        architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
        if architecture not in self.model_classes:
            raise ValueError(
                f"{path}: architecture {architecture!r} is not family {self.name!r} "
                f"(expects {', '.join(self.model_classes)})"
            )
        model = getattr(transformers, architecture).from_pretrained(str(folder), dtype=torch_dtype)
        return ChatModel(model.eval(), self.load_processor(folder))

    def load_processor(self, folder: Path) -> Any:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        template_file = folder / CHAT_TEMPLATE_FILE
        template = template_file.read_text() if template_file.exists() else None
        return image_only(self.processor_class)(
            image_processor=self.image_processor_class.from_pretrained(str(folder)),
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=template or tokenizer.chat_template,
        )

    def render(self, processor: Any, messages: list[dict[str, Any]], thinking: bool) -> str:
        """The prompt text, images as the template's placeholders (the processor expands
        each into the image's tokens)."""
        # Only templates with a thinking switch are told about it.
        extra = {"enable_thinking": thinking} if self.traits.reasoning_markers else {}
        return processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **extra
        )

    def eos_ids(self, chat: ChatModel) -> list[int]:
        eos = chat.model.generation_config.eos_token_id
        if eos is None:
            eos = chat.tokenizer.eos_token_id
        return list(eos) if isinstance(eos, list | tuple) else [eos]


def local_folder(path: str | Path) -> Path:
    """A local checkpoint folder; a hub id resolves through the local hub cache."""
    local = Path(path)
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path)))
