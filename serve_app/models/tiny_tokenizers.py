"""Byte-level tokenizers built in code, so tiny models need no hub download.

With an empty merge list every byte is its own token: fine for random weights,
and the tokenizers still save and load like a real checkpoint's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import CLIPTokenizer, Qwen2Tokenizer, T5Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_symbols() -> list[str]:
    return list(bytes_to_unicode().values())


def clip_tokenizer() -> CLIPTokenizer:
    symbols = _byte_symbols()
    # CLIP's BPE marks the last symbol of each word with </w>.
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> T5Tokenizer:
    """A unigram vocabulary of printable ASCII characters after T5's three specials (pad,
    end, unknown at ids 0-2, as in the real one); no sentinel tokens, which only the
    T5 decoder uses."""
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    characters = [(chr(code), -1.0) for code in range(32, 127)]
    return T5Tokenizer(vocab=specials + characters, extra_ids=0, model_max_length=512)


def byte_level_tokenizer(
    specials: Sequence[str], *, eos_token: str, pad_token: str, **options: Any
) -> Qwen2Tokenizer:
    """Every byte a token, then `specials` in order; no unknown or BOS token."""
    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    for special in specials:
        vocab[special] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        bos_token=None,
        eos_token=eos_token,
        pad_token=pad_token,
        **options,
    )


def qwen_tokenizer() -> Qwen2Tokenizer:
    tokenizer = byte_level_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
