"""A vision-chat model in one process: load once, answer batches of conversations in one
`generate` call each. The Ray deployment is a thin shell around this; tests drive it too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import GenerationConfig, LogitsProcessorList

from serve_app.config import ModelConfig
from serve_app.errors import ErrorCode, InvalidRequestError
from serve_app.models.batch_queue import BatchBudget, BatchCost
from serve_app.models.chat_spec import ChatDelta, ChatResult, ChatSpec, FinishReason
from serve_app.models.decoding import (
    CLOSING_MARGIN,
    Row,
    RowDecoder,
    Tokens,
    new_matcher,
    seeded_generator,
    shortest_answer,
    tokens_for,
)
from serve_app.models.engine import out_of_memory
from serve_app.models.loading import load_chat_model
from serve_app.models.text_stream import IncrementalText, ReasoningSplitter, StopStrings
from serve_app.observability.gpu import gpu_report
from serve_app.observability.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

# Every conversation can share a generate call: rows differ in length (left padding),
# images, sampling, limits and grammar, and each still answers as it would alone.
SHARED_CALL = "generate"


@dataclass(eq=False)
class ChatTask:
    """A request as the replica holds it: the spec, where its stream goes, and whether
    its caller is still there."""

    spec: ChatSpec
    # Told the deltas of each step (streaming callers only).
    on_deltas: Callable[[list[ChatDelta]], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    _pending: list[ChatDelta] = field(default_factory=list)

    def flush(self) -> None:
        if self._pending and self.on_deltas is not None:
            pending, self._pending = self._pending, []
            self.on_deltas(pending)


@dataclass
class _Prepared:
    inputs: dict[str, torch.Tensor]
    prompt_tokens: int


class ChatEngine:
    def __init__(
        self,
        config: ModelConfig,
        tiny_cache: Path,
        metrics: ServiceMetrics | None = None,
        cpu_threads: int | None = None,
    ):
        if cpu_threads is not None:
            torch.set_num_threads(cpu_threads)
        self.config = config
        self.metrics = metrics or ServiceMetrics()
        started = time.perf_counter()
        self.loaded = load_chat_model(config, tiny_cache)
        self.load_seconds = time.perf_counter() - started
        self.family = self.loaded.family
        self.chat = self.loaded.chat
        self.device = self.loaded.device
        tokenizer = self.chat.tokenizer
        tokenizer.padding_side = "left"
        vocab_size = self.chat.model.get_output_embeddings().weight.shape[0]
        self.tokens: Tokens = tokens_for(tokenizer, self.family.eos_ids(self.chat), vocab_size)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.tokens.eos
        )
        self._control_tokens = tuple(
            token for token in tokenizer.get_added_vocab() if len(token) > 1
        )
        # One generate call at a time.
        self._lock = threading.Lock()
        # The closing budget of each grammar seen, by its text.
        self._shortest: dict[str, int] = {}
        logger.info("%s loaded on %s in %.2fs", config.name, self.device, self.load_seconds)

    # --- the batch queue's view ----------------------------------------------------------

    def batch_budget(self) -> BatchBudget:
        batching = self.config.batching
        return BatchBudget(batching.max_batch_size, batching.work_budget())

    @staticmethod
    def batch_cost(task: ChatTask) -> BatchCost:
        """A request weighs its n rows."""
        return BatchCost(task.spec.n, task.spec.n, SHARED_CALL)

    # --- one generate call ---------------------------------------------------------------

    def run_batch(
        self, tasks: list[ChatTask], *, record: bool = True
    ) -> list[ChatResult | Exception]:
        """Answer every task in one generate call; a task refused (too long a prompt, a
        budget too small for its grammar) gets its exception and the rest still run."""
        results: list[ChatResult | Exception | None] = [None] * len(tasks)
        prepared: list[tuple[int, _Prepared, list[Row]]] = []
        for index, task in enumerate(tasks):
            try:
                ready = self._prepare(task.spec)
                prepared.append((index, ready, self._rows(task)))
            except InvalidRequestError as error:
                results[index] = error
            except Exception as error:
                logger.exception("%s: preparing a request failed", self.config.name)
                results[index] = error
        if prepared:
            try:
                with self._lock:
                    seconds, rows = self._generate(tasks, prepared)
            except torch.cuda.OutOfMemoryError:
                error = out_of_memory(self.config.name)
                for index, _, _ in prepared:
                    results[index] = error
                return results  # type: ignore[return-value]
            except Exception as error:
                logger.exception("%s: generate failed", self.config.name)
                for index, _, _ in prepared:
                    results[index] = error
                return results  # type: ignore[return-value]
            for index, ready, task_rows in prepared:
                firsts = [row.first_token_at for row in task_rows if row.first_token_at is not None]
                results[index] = ChatResult(
                    choices=[row.choice() for row in task_rows],
                    prompt_tokens=ready.prompt_tokens,
                    batch_rows=rows,
                    first_token_s=min(firsts) if firsts else None,
                    generate_s=seconds,
                )
            if record:
                self._record(tasks, prepared, seconds, rows)
        return results  # type: ignore[return-value]

    def _prepare(self, spec: ChatSpec) -> _Prepared:
        self._refuse_control_tokens(spec)
        text = self.family.render(self.chat.processor, list(spec.messages), spec.thinking)
        images = [Image.fromarray(pixels) for pixels in spec.images] or None
        inputs = self.chat.processor(text=[text], images=images, return_tensors="pt")
        prompt_tokens = int(inputs["input_ids"].shape[1])
        most = self.config.chat.limits.max_prompt_tokens
        if prompt_tokens > most:
            raise InvalidRequestError(
                f"the conversation is {prompt_tokens} tokens (text and images); model "
                f"{self.config.name!r} takes at most {most}: shorten it, or send fewer or "
                "lower-detail images",
                code=ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                param="messages",
            )
        return _Prepared(dict(inputs), prompt_tokens)

    def _refuse_control_tokens(self, spec: ChatSpec) -> None:
        """Text that spells a control token (`<|image|>`, `<|assistant|>`, ...) would be
        read as one: a forged turn or an image with no pixels. Refused, not escaped, so
        the client sees why."""
        for number, message in enumerate(spec.messages):
            for part in message["content"]:
                text = part.get("text") or ""
                found = next((t for t in self._control_tokens if t in text), None)
                if found is not None:
                    raise InvalidRequestError(
                        f"messages[{number}] contains {found!r}, a control token of model "
                        f"{self.config.name!r}; remove it",
                        code=ErrorCode.INVALID_MESSAGES,
                        param=f"messages[{number}].content",
                    )

    def _rows(self, task: ChatTask) -> list[Row]:
        spec = task.spec
        reserve = 0
        if spec.grammar is not None:
            shortest = self._shortest_answer(spec.grammar)
            if shortest > spec.max_tokens:
                raise InvalidRequestError(
                    f"max_tokens ({spec.max_tokens}) is too small for the response format: "
                    f"its shortest answer takes {shortest} tokens",
                    code=ErrorCode.INVALID_MAX_TOKENS,
                    param="max_tokens",
                )
            reserve = min(2 * shortest + CLOSING_MARGIN, spec.max_tokens)
        rows = []
        for index, seed in enumerate(spec.seeds):

            def on_delta(reasoning: str, answer: str, index: int = index) -> None:
                task._pending.append(ChatDelta(index, content=answer, reasoning=reasoning))

            rows.append(
                Row(
                    max_tokens=spec.max_tokens,
                    temperature=spec.temperature,
                    top_p=spec.top_p,
                    generator=seeded_generator(seed, self.device) if spec.temperature else None,
                    text=IncrementalText(self.tokens.decode),
                    stops=StopStrings(spec.stop),
                    splitter=ReasoningSplitter(
                        self.family.traits.reasoning_markers, self.family.answer_wrappers
                    ),
                    matcher=new_matcher(self.tokens, spec.grammar) if spec.grammar else None,
                    closing_reserve=reserve,
                    on_delta=on_delta if task.on_deltas is not None else None,
                    cancelled=task.cancelled,
                )
            )
        return rows

    def _shortest_answer(self, grammar: str) -> int:
        if grammar not in self._shortest:
            if len(self._shortest) > 256:
                self._shortest.clear()
            self._shortest[grammar] = shortest_answer(self.tokens, grammar)
        return self._shortest[grammar]

    def _generate(
        self, tasks: list[ChatTask], prepared: list[tuple[int, _Prepared, list[Row]]]
    ) -> tuple[float, int]:
        """One generate call over every row; returns (seconds, rows)."""
        rows: list[Row] = []
        row_inputs: list[dict[str, torch.Tensor]] = []
        for _, ready, task_rows in prepared:
            rows.extend(task_rows)
            row_inputs.extend([ready.inputs] * len(task_rows))
        batch = self._collate(row_inputs)
        live = [tasks[index] for index, _, _ in prepared]

        def flush() -> None:
            for task in live:
                task.flush()

        decoder = RowDecoder(rows, self.tokens, on_step=flush)
        generation = GenerationConfig(
            max_new_tokens=max(row.max_tokens for row in rows),
            do_sample=False,
            eos_token_id=sorted(self.tokens.eos_ids),
            pad_token_id=self.pad_id,
        )
        started = time.perf_counter()
        with torch.inference_mode():
            self.chat.model.generate(
                **batch,
                generation_config=generation,
                logits_processor=LogitsProcessorList([decoder]),
            )
        for row in rows:
            if not row.done:  # generate stopped at the longest budget
                row.finish = FinishReason.LENGTH
                row.close()
        flush()
        return time.perf_counter() - started, len(rows)

    def _collate(self, row_inputs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Rows left-padded to one length; image tensors concatenated in row order."""
        longest = max(inputs["input_ids"].shape[1] for inputs in row_inputs)
        batch: dict[str, Any] = {}
        for key in row_inputs[0]:
            values = [inputs[key] for inputs in row_inputs if key in inputs]
            first = values[0]
            if not isinstance(first, torch.Tensor):
                continue
            if first.dim() == 2 and first.shape[0] == 1 and key != "image_grid_thw":
                fill = self.pad_id if key == "input_ids" else 0
                batch[key] = torch.cat(
                    [
                        torch.nn.functional.pad(value, (longest - value.shape[1], 0), value=fill)
                        for value in values
                    ]
                )
            else:
                batch[key] = torch.cat(values)
        model_dtype = self.chat.model.dtype
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model_dtype)
        return {key: value.to(self.device) for key, value in batch.items()}

    def _record(
        self,
        tasks: list[ChatTask],
        prepared: list[tuple[int, _Prepared, list[Row]]],
        seconds: float,
        rows: int,
    ) -> None:
        name = self.config.name
        prompt = sum(ready.prompt_tokens * len(task_rows) for _, ready, task_rows in prepared)
        completion = sum(row.count for _, _, task_rows in prepared for row in task_rows)
        self.metrics.batch_formed(name, rows)
        self.metrics.stage_time("model", name, seconds)
        self.metrics.chat_call(name, prompt, completion, seconds)
        for index, _, task_rows in prepared:
            if tasks[index].cancelled.is_set():
                self.metrics.chat_cancelled(name)
            firsts = [row.first_token_at for row in task_rows if row.first_token_at is not None]
            if firsts:
                self.metrics.first_token(name, min(firsts))

    # --- start-up and health -------------------------------------------------------------

    def warmup(self) -> None:
        """One short call with an image, so no request pays for lazy initialisation."""
        gray = np.full((56, 56, 3), 128, dtype=np.uint8)
        messages = (
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]},
        )
        spec = ChatSpec(messages, (gray,), max_tokens=2, temperature=0.0, top_p=1.0, seeds=(0,))
        started = time.perf_counter()
        result = self.run_batch([ChatTask(spec)], record=False)[0]
        if isinstance(result, Exception):
            raise result
        logger.info("%s: warmed in %.2fs", self.config.name, time.perf_counter() - started)

    def health(self) -> dict:
        return {
            "model": self.config.name,
            "family": self.config.family,
            "task": self.family.traits.task,
            "device": self.device,
            "dtype": self.loaded.dtype,
            "load_seconds": round(self.load_seconds, 3),
            "gpu": gpu_report(self.device),
        }
