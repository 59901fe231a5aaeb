"""One `generate` call, many conversations: every row picks its own next token.

transformers' `generate` samples a whole batch with one temperature, one top-p and the
global RNG, and stops a row only at EOS. Here a logits processor makes each row's choice
itself (its grammar mask, its temperature and top-p, its own seeded generator) and hands
`generate` that token as the only possible one; a row that is finished (its stop string,
its token budget, its grammar complete, its caller gone) is handed EOS, which `generate`
already knows how to retire. So a request in a batch answers what it answers alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import llguidance
import llguidance.torch as llg_torch
import numpy as np
import torch
from transformers import LogitsProcessor

from serve_app.models.chat_spec import ChatChoice, ChatDelta, FinishReason
from serve_app.models.text_stream import IncrementalText, ReasoningSplitter, StopStrings

# While a structured answer must still close within its budget, these are preferred
# among the tokens its grammar allows, in this order: they end strings, arrays and
# objects, or give a value the shortest way. The quote comes first because inside a
# string a brace is just text, and only the quote ends it.
CLOSING_TEXTS = ('"', "}", "]", "0", "n", "f", "t", "[", "{", ",", ":")
# Tokens kept for closing beyond the shortest complete answer the grammar allows.
CLOSING_MARGIN = 16


@dataclass
class Tokens:
    """What rows need of the tokenizer, computed once per model."""

    decode: Callable[[Sequence[int]], str]
    eos_ids: frozenset[int]
    vocab_size: int
    grammar_tokenizer: llguidance.LLTokenizer
    closing_ids: tuple[int, ...]

    @property
    def eos(self) -> int:
        return min(self.eos_ids)


def tokens_for(tokenizer, eos_ids: Sequence[int], vocab_size: int) -> Tokens:
    import llguidance.hf

    closing = []
    for text in CLOSING_TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1:
            closing.append(ids[0])
    return Tokens(
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
        eos_ids=frozenset(eos_ids),
        vocab_size=vocab_size,
        grammar_tokenizer=llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=min(eos_ids)
        ),
        closing_ids=tuple(closing),
    )


@dataclass
class Row:
    """One choice of one request: its sampling, its limits, its text so far."""

    max_tokens: int
    temperature: float
    top_p: float
    generator: torch.Generator | None
    text: IncrementalText
    stops: StopStrings
    splitter: ReasoningSplitter
    matcher: llguidance.LLMatcher | None = None
    # Tokens to keep for closing a structured answer.
    closing_reserve: int = 0
    # Told each piece of (reasoning, answer) text as it is released.
    on_delta: Callable[[str, str], None] | None = None
    cancelled: threading.Event | None = None
    finish: FinishReason | None = None
    count: int = 0
    first_token_at: float | None = None
    reasoning: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.finish is not None

    def release(self, text: str) -> None:
        reasoning, answer = self.splitter.feed(text)
        self._emit(reasoning, answer)

    def close(self) -> None:
        reasoning, answer = self.splitter.feed(self.stops.flush())
        more_reasoning, more_answer = self.splitter.flush()
        self._emit(reasoning + more_reasoning, answer + more_answer)

    def _emit(self, reasoning: str, answer: str) -> None:
        if not (reasoning or answer):
            return
        self.reasoning.append(reasoning)
        self.answer.append(answer)
        if self.on_delta is not None:
            self.on_delta(reasoning, answer)

    def choice(self) -> ChatChoice:
        reasoning = "".join(self.reasoning)
        return ChatChoice(
            text="".join(self.answer).strip() if self.splitter.markers else "".join(self.answer),
            reasoning=reasoning.strip() or None,
            finish_reason=self.finish or FinishReason.LENGTH,
            completion_tokens=self.count,
        )


def new_matcher(tokens: Tokens, grammar: str) -> llguidance.LLMatcher:
    matcher = llguidance.LLMatcher(tokens.grammar_tokenizer, grammar)
    if matcher.is_error():
        raise ValueError(matcher.get_error())
    return matcher


def allowed_tokens(matcher: llguidance.LLMatcher, vocab_size: int) -> np.ndarray:
    """A boolean mask over the vocabulary: what the grammar allows next."""
    bitmask = llg_torch.allocate_token_bitmask(1, vocab_size)
    llg_torch.fill_next_token_bitmask(matcher, bitmask, 0)
    bits = np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")
    return bits[:vocab_size].astype(bool)


def closing_token(matcher: llguidance.LLMatcher, tokens: Tokens, allowed: np.ndarray) -> int | None:
    """The token that ends a structured answer soonest, by CLOSING_TEXTS' preference."""
    if matcher.is_accepting():
        return tokens.eos
    for token in tokens.closing_ids:
        if allowed[token]:
            return token
    return None


def shortest_answer(tokens: Tokens, grammar: str, limit: int = 4096) -> int:
    """Tokens the closing preference needs from the start to a complete answer: the budget
    a structured request must at least have."""
    matcher = new_matcher(tokens, grammar)
    for count in range(limit):
        allowed = allowed_tokens(matcher, tokens.vocab_size)
        token = closing_token(matcher, tokens, allowed)
        if token == tokens.eos:
            return count
        if token is None:
            token = int(np.flatnonzero(allowed)[0])
        if not matcher.consume_token(token):
            break
    return limit


class RowDecoder(LogitsProcessor):
    """The logits processor that makes every row's choice (see the module docstring)."""

    def __init__(self, rows: list[Row], tokens: Tokens, on_step: Callable[[], None] | None = None):
        self.rows = rows
        self.tokens = tokens
        self.on_step = on_step
        self.started = time.perf_counter()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = self._choose(scores)
        forced = torch.full_like(scores, -float("inf"))
        forced[torch.arange(len(chosen)), torch.tensor(chosen, device=scores.device)] = 0.0
        if self.on_step is not None:
            self.on_step()
        return forced

    def _choose(self, scores: torch.Tensor) -> list[int]:
        scores = scores.float()
        greedy = scores.argmax(dim=-1).tolist()
        now = time.perf_counter()
        chosen = []
        for index, row in enumerate(self.rows):
            if not row.done:
                self._check_limits(row)
            if row.done:
                chosen.append(self.tokens.eos)
                continue
            token = self._pick(row, scores[index], greedy[index])
            if token in self.tokens.eos_ids:
                row.finish = FinishReason.STOP
                row.close()
                chosen.append(self.tokens.eos)
                continue
            row.count += 1
            if row.first_token_at is None:
                row.first_token_at = now - self.started
            if row.matcher is not None:
                row.matcher.consume_token(token)
            row.release(row.stops.feed(row.text.push(token)))
            if row.stops.stopped:
                row.finish = FinishReason.STOP
                row.close()
            chosen.append(token)
        return chosen

    def _check_limits(self, row: Row) -> None:
        if row.cancelled is not None and row.cancelled.is_set():
            row.finish = FinishReason.CANCELLED
        elif row.count >= row.max_tokens:
            row.finish = FinishReason.LENGTH
            row.close()
        elif row.matcher is not None and row.matcher.is_stopped():
            row.finish = FinishReason.STOP
            row.close()

    def _pick(self, row: Row, scores: torch.Tensor, greedy: int) -> int:
        if row.matcher is not None:
            allowed = allowed_tokens(row.matcher, self.tokens.vocab_size)
            if row.max_tokens - row.count <= row.closing_reserve:
                token = closing_token(row.matcher, self.tokens, allowed)
                if token is not None:
                    return token
            mask = torch.from_numpy(~allowed).to(scores.device)
            scores = scores.masked_fill(mask[: scores.shape[-1]], -float("inf"))
            greedy = int(scores.argmax())
        if row.temperature == 0 or row.generator is None:
            return greedy
        probs = torch.softmax(scores / row.temperature, dim=-1)
        if row.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            # Keep the smallest set of tokens whose mass reaches top_p (the first always).
            outside = ordered.cumsum(-1) - ordered > row.top_p
            ordered[outside] = 0.0
            probs = torch.zeros_like(probs).scatter_(-1, order, ordered)
        return int(torch.multinomial(probs, 1, generator=row.generator))


def seeded_generator(seed: int, device: str) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def row_delta_sink(
    index: int, sink: Callable[[ChatDelta], None] | None
) -> Callable[[str, str], None] | None:
    if sink is None:
        return None
    return lambda reasoning, answer: sink(ChatDelta(index, content=answer, reasoning=reasoning))
