"""What the Gateway asks of a vision-chat replica, and what comes back: plain, picklable
objects (no torch), like spec.py for images."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    # The caller went away (a closed stream, a canceled job); never sent to a client.
    CANCELLED = "cancelled"


@dataclass(frozen=True, eq=False)
class ChatSpec:
    """One chat request, its images decoded and sized by the Gateway.

    `messages` are in the chat-template form transformers' processors take: each
    `{"role", "content": [{"type": "text", "text"} | {"type": "image"}]}`, the images in
    `images` in the order their parts appear.
    """

    messages: tuple[dict[str, Any], ...]
    images: tuple[np.ndarray, ...]
    max_tokens: int
    temperature: float
    top_p: float
    # One seed per choice (n = len(seeds)); choice i samples from seeds[i].
    seeds: tuple[int, ...]
    stop: tuple[str, ...] = ()
    # A llguidance grammar (JSON) the answer must match, for structured answers.
    grammar: str | None = None
    thinking: bool = True
    job_id: str | None = None

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class ChatChoice:
    text: str
    reasoning: str | None
    finish_reason: FinishReason
    completion_tokens: int


@dataclass(frozen=True)
class ChatResult:
    choices: list[ChatChoice]
    prompt_tokens: int
    # Rows in the `generate` call this request shared (1 = ran alone).
    batch_rows: int
    # From the start of the `generate` call to this request's first token.
    first_token_s: float | None
    generate_s: float

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


@dataclass(frozen=True)
class ChatDelta:
    """New text of one choice while it is generated (streaming)."""

    index: int
    content: str = ""
    reasoning: str = ""


@dataclass
class ChatDeltas:
    """What a streaming caller receives: the deltas of one or more steps, in order."""

    deltas: list[ChatDelta] = field(default_factory=list)
