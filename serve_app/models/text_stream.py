"""Turning one row's tokens into the text a client sees, a step at a time: incremental
detokenizing, stop strings, and the thinking block split from the answer. Torch-free, so
it is tested on its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# A byte-level tokenizer decodes an incomplete UTF-8 sequence to this.
REPLACEMENT = "\ufffd"


class IncrementalText:
    """New text as tokens arrive, without decoding the whole row at every step."""

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self._decode = decode
        self.tokens: list[int] = []
        self._prefix = 0  # start of the tokens decoded for context
        self._read = 0  # tokens whose text has been given out

    def push(self, token: int) -> str:
        self.tokens.append(token)
        before = self._decode(self.tokens[self._prefix : self._read])
        after = self._decode(self.tokens[self._prefix :])
        if after.endswith(REPLACEMENT) or len(after) <= len(before):
            return ""  # the middle of a multi-byte character: wait for the rest
        # The tokens just given out stay as context for the next step's decode.
        self._prefix, self._read = self._read, len(self.tokens)
        return after[len(before) :]


class StopStrings:
    """Finds the first stop string in the text so far. Text that might begin one is held
    back until it cannot, so a streamed answer never shows part of a stop string."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stop for stop in stops if stop)
        self._longest = max((len(stop) for stop in self.stops), default=0)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that is now safe to release."""
        if self.stopped:
            return ""
        self._pending += text
        if not self.stops:
            released, self._pending = self._pending, ""
            return released
        hits = [i for i in (self._pending.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            released, self._pending = self._pending[: min(hits)], ""
            return released
        keep = self._held_back()
        released = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return released

    def flush(self) -> str:
        released, self._pending = ("" if self.stopped else self._pending), ""
        return released

    def _held_back(self) -> int:
        """Characters at the end that are a proper prefix of some stop string."""
        for size in range(min(self._longest - 1, len(self._pending)), 0, -1):
            tail = self._pending[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0


class ReasoningSplitter:
    """Splits `<think>…</think>` (the family's markers) from the answer as text arrives.

    The model starts in the answer; an opening marker switches to reasoning and the
    closing one back. `extra_markers` (answer wrappers such as GLM's box tokens) are
    dropped from the answer.
    """

    def __init__(self, markers: tuple[str, str] | None, extra_markers: Sequence[str] = ()):
        self.markers = markers
        self.extra_markers = tuple(extra_markers)
        self._all = tuple(m for m in (*(markers or ()), *self.extra_markers) if m)
        self._pending = ""
        self._thinking = False

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, answer) released by this text."""
        self._pending += text
        return self._drain(final=False)

    def flush(self) -> tuple[str, str]:
        return self._drain(final=True)

    def _drain(self, final: bool) -> tuple[str, str]:
        reasoning, answer = [], []
        while self._pending:
            marker, at = self._next_marker()
            if marker is None:
                keep = 0 if final else self._partial_marker()
                piece = self._pending[: len(self._pending) - keep]
                self._pending = self._pending[len(self._pending) - keep :]
                (reasoning if self._thinking else answer).append(piece)
                break
            (reasoning if self._thinking else answer).append(self._pending[:at])
            self._pending = self._pending[at + len(marker) :]
            if self.markers and marker == self.markers[0]:
                self._thinking = True
            elif self.markers and marker == self.markers[1]:
                self._thinking = False
        return "".join(reasoning), "".join(answer)

    def _next_marker(self) -> tuple[str | None, int]:
        found = [(self._pending.find(m), m) for m in self._all]
        found = [(at, m) for at, m in found if at >= 0]
        if not found:
            return None, -1
        at, marker = min(found)
        return marker, at

    def _partial_marker(self) -> int:
        longest = max((len(m) for m in self._all), default=1)
        for size in range(min(longest - 1, len(self._pending)), 0, -1):
            tail = self._pending[-size:]
            if any(m.startswith(tail) for m in self._all):
                return size
        return 0
