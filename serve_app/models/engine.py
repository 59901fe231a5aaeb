"""A model in one process: load once, run batches, encode results.

The Ray deployment is a thin shell around this; tests drive it directly too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from serve_app.config import ModelConfig, parse_size
from serve_app.errors import ErrorCode, RequestCancelledError, ServiceUnavailableError
from serve_app.families import Batching, Task
from serve_app.images import encode_image
from serve_app.models.adapters import HotSwapAdapters, LoadedAdapters
from serve_app.models.base import StepHook
from serve_app.models.batch_queue import BatchBudget, BatchCost
from serve_app.models.loading import load_model
from serve_app.models.previews import (
    PreviewDecoder,
    PreviewOrder,
    PreviewWorker,
    preview_steps,
)
from serve_app.models.spec import EditSpec, GeneratedImage, GenerationSpec, PartialImage
from serve_app.observability.gpu import gpu_report
from serve_app.observability.metrics import ServiceMetrics

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """One request's share of a batch."""

    pixels: list[np.ndarray]
    # How many images the pipeline call that made them held in total.
    batch_images: int


ModelSpec = GenerationSpec | EditSpec
# Told (job ids, step, total) as a pipeline call that holds durable jobs advances;
# answers the ids among them that are no longer running (canceled), or None if it did
# not look this time.
ProgressSink = Callable[[list[str], int, int], Collection[str] | None]


@dataclass(eq=False)
class ImageTask:
    """A request as the replica holds it: the spec, where its previews go, and whether
    anyone still waits for it."""

    spec: ModelSpec
    # Told each preview (streaming callers and jobs that asked for them).
    on_partial: Callable[[PartialImage], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Its pipeline call has begun (set on the call's thread).
    started: bool = False


class CallStopped(Exception):
    """Raised in a step callback: every request of the call has gone."""

    def __init__(self, step: int):
        super().__init__(f"stopped after step {step}")
        self.step = step


def cancelled_error() -> RequestCancelledError:
    return RequestCancelledError(
        "the request was cancelled before its images were made", code=ErrorCode.CANCELED
    )


def out_of_memory(model_name: str) -> ServiceUnavailableError:
    """What a call that ran out of GPU memory answers, its cache freed for the next."""
    torch.cuda.empty_cache()
    return ServiceUnavailableError(
        f"model {model_name!r} ran out of GPU memory; retry with fewer or smaller images",
        code=ErrorCode.MODEL_OUT_OF_MEMORY,
    )


class ModelEngine:
    """Text-to-image and edit models alike: the family decides what one call does."""

    def __init__(
        self,
        config: ModelConfig,
        tiny_cache: Path,
        metrics: ServiceMetrics | None = None,
        progress: ProgressSink | None = None,
        cpu_threads: int | None = None,
    ):
        if cpu_threads is not None:
            # torch's intra-op threads in this process (a replica's share of the node).
            torch.set_num_threads(cpu_threads)
        self.config = config
        width, height = parse_size(config.defaults.size)
        # One default-size, default-steps image: the unit of a request's batch cost.
        self._default_work = width * height * config.defaults.steps
        self.metrics = metrics or ServiceMetrics()
        self.progress = progress
        started = time.perf_counter()
        self.model = load_model(config, tiny_cache)
        self.load_seconds = time.perf_counter() - started
        # Per-request LoRA adapters, where the family takes them.
        self.adapters: LoadedAdapters | HotSwapAdapters | None = None
        if config.hot_swaps_adapters:
            assert config.adapters.hotswap_rank is not None
            self.adapters = HotSwapAdapters(
                self.model.pipeline,
                config.adapters.hotswap_rank,
                config.name,
                tiny_cache,
                self.metrics,
            )
        elif self.model.family.traits.supports_adapters:
            self.adapters = LoadedAdapters(
                self.model.pipeline,
                config.adapters.max_loaded,
                config.name,
                tiny_cache,
                self.metrics,
            )
        # One pipeline call at a time: diffusers pipelines are not re-entrant.
        self._lock = threading.Lock()
        # The requests of the call under way (read by abandon() from the event loop).
        self._running: list[ImageTask] = []
        self.previews: PreviewWorker | None = None
        if self.model.family.traits.reports_steps:
            decoder = PreviewDecoder(
                self.model.family,
                self.model.pipeline,
                config.previews,
                self.model.device,
                tiny_cache,
            )
            self.previews = PreviewWorker(
                decoder, self._record_previews, inline=config.offload != "none"
            )
        logger.info("%s loaded on %s in %.2fs", config.name, self.model.device, self.load_seconds)

    def run_batch(
        self, items: Sequence[ModelSpec | ImageTask], *, record: bool = True
    ) -> list[BatchResult | Exception]:
        """Group requests by batch key, run one pipeline call per group, keep their order.

        A group that fails gives its requests the exception; other groups still run.
        Requests already cancelled are not run; a call whose requests all go away stops
        at its next step. `record=False` keeps a call (the warm-up) out of the metrics.
        """
        tasks = [item if isinstance(item, ImageTask) else ImageTask(item) for item in items]
        shares_calls = self.config.batching_mode is Batching.SHARED
        groups: dict[tuple, list[int]] = {}
        for index, task in enumerate(tasks):
            key = task.spec.batch_key() if shares_calls else (index,)
            groups.setdefault(key, []).append(index)
        results: list[BatchResult | Exception | None] = [None] * len(tasks)
        for indices in groups.values():
            for index in indices:
                if tasks[index].cancelled.is_set():
                    results[index] = cancelled_error()
            live = [i for i in indices if results[i] is None]
            if live:
                self._run_group([tasks[i] for i in live], live, results, record)
        return results  # type: ignore[return-value]

    def _run_group(
        self,
        group: list[ImageTask],
        indices: list[int],
        results: list[BatchResult | Exception | None],
        record: bool,
    ) -> None:
        specs = [task.spec for task in group]
        try:
            with self._lock:
                for task in group:
                    task.started = True
                if self.adapters is not None:
                    # Every spec of a group has the same adapters (they are in its key).
                    self.adapters.activate(specs[0].adapters)
                self._running = group
                started = time.perf_counter()
                try:
                    images = self.model.family.run(
                        self.model.pipeline, specs, self._step_hook(group)
                    )
                finally:
                    self._running = []
                    self.model.pipeline._interrupt = False
                    if self.previews is not None:
                        self.previews.settle(drop=all(t.cancelled.is_set() for t in group))
                seconds = time.perf_counter() - started
        except CallStopped as stop:
            self.metrics.steps_saved(self.config.name, specs[0].steps - stop.step)
            error: Exception = cancelled_error()
        except torch.cuda.OutOfMemoryError:
            error = out_of_memory(self.config.name)
        except Exception as failure:
            logger.exception("%s: pipeline call failed", self.config.name)
            error = failure
        else:
            total = len(images)
            if record:
                self._record_call(total, seconds)
                for spec in specs:
                    for use in spec.adapters:
                        self.metrics.lora_event(self.config.name, use.name, "applied")
            offset = 0
            for index, spec in zip(indices, specs, strict=True):
                results[index] = BatchResult(images[offset : offset + spec.n], total)
                offset += spec.n
            return
        for index in indices:
            results[index] = error

    def abandon(self, task: ImageTask) -> None:
        """Its caller went away. A call whose requests have all gone stops at its next
        step: the step callback sees it, or, for families without one, the pipeline's
        own interrupt flag (checked each step, but cleared by the pipeline as a call
        starts, so a cancel in that instant waits for the call's end)."""
        task.cancelled.set()
        self.metrics.image_request_cancelled(
            self.config.name, "running" if task.started else "queued"
        )
        running = self._running
        if (
            running
            and not self.model.family.traits.reports_steps
            and all(t.cancelled.is_set() for t in running)
        ):
            self.model.pipeline._interrupt = True

    def batch_budget(self) -> BatchBudget:
        batching = self.config.batching
        return BatchBudget(batching.max_batch_size, batching.work_budget())

    def batch_cost(self, spec: ModelSpec) -> BatchCost:
        """A request's weight in default images (n x pixels x steps over the model's
        default size and steps) and the key it shares pipeline calls by."""
        work = spec.n * spec.width * spec.height * spec.steps / self._default_work
        shares_calls = self.config.batching_mode is Batching.SHARED
        return BatchCost(spec.n, work, spec.batch_key() if shares_calls else None)

    def _step_hook(self, group: list[ImageTask]) -> StepHook:
        """After each step: stop if everyone left, report jobs' progress (and learn which
        were canceled), and hand the latents of previews due at this step to the worker."""
        total = group[0].spec.steps
        jobs = {task.spec.job_id: task for task in group if task.spec.job_id}
        plans = self._preview_plans(group)

        def on_step(step: int, latents: torch.Tensor | None) -> None:
            if jobs and self.progress is not None:
                gone = self.progress(list(jobs), step, total) or ()
                for job_id in gone:
                    jobs[job_id].cancelled.set()
            if all(task.cancelled.is_set() for task in group):
                raise CallStopped(step)
            if plans and latents is not None:
                self._previews_at(step, latents, group, plans)
            if plans and step >= total and self.previews is not None:
                # The pipeline decodes its images next, with the VAE a preview may still be
                # using on the worker: Qwen-Image's keeps a feature cache per decode, and
                # two at once corrupt each other's.
                self.previews.settle()

        return on_step

    def _preview_plans(self, group: list[ImageTask]) -> dict[int, tuple[int, ...]]:
        """Per task (by position), the steps after which its previews are made."""
        if self.previews is None:
            return {}
        plans = {}
        for position, task in enumerate(group):
            if task.on_partial is not None:
                steps = preview_steps(task.spec.steps, task.spec.partial_images)
                if steps:
                    plans[position] = steps
        return plans

    def _previews_at(
        self,
        step: int,
        latents: torch.Tensor,
        group: list[ImageTask],
        plans: dict[int, tuple[int, ...]],
    ) -> None:
        rows: list[int] = []
        orders: list[PreviewOrder] = []
        offset = 0
        for position, task in enumerate(group):
            spec = task.spec
            plan = plans.get(position, ())
            if step in plan and not task.cancelled.is_set() and task.on_partial is not None:
                for image in range(spec.n):
                    rows.append(offset + image)
                    orders.append(
                        PreviewOrder(
                            task.on_partial,
                            image,
                            plan.index(step),
                            step,
                            spec.steps,
                            spec.output_format,
                            spec.output_compression,
                        )
                    )
            offset += spec.n
        if not rows:
            return
        assert self.previews is not None
        # A copy: the pipeline goes on changing its latents in place.
        chosen = latents[rows].detach().clone()
        first = group[0].spec
        self.previews.submit(chosen, first.height, first.width, orders)

    def warmup(self) -> list[tuple[int, int, int]]:
        """The configured warm-up calls (default: one image at the default size), so no
        request pays for lazy initialisation, autotuning or compilation. Stops starting
        calls after `warmup.max_s`; returns the (width, height, images) it ran."""
        defaults = self.config.defaults
        started = time.perf_counter()
        done = []
        for width, height, images in self.config.warmup_shapes():
            elapsed = time.perf_counter() - started
            if done and elapsed > self.config.warmup.max_s:
                logger.warning(
                    "%s: warm-up stopped after %.0fs (warmup.max_s); %dx%d x%d and later "
                    "shapes were not warmed",
                    self.config.name,
                    elapsed,
                    width,
                    height,
                    images,
                )
                break
            seeds = tuple(range(images))
            spec: ModelSpec
            if self.model.family.traits.task is Task.IMAGE_EDIT:
                gray = np.full((height, width, 3), 128, dtype=np.uint8)
                spec = EditSpec(
                    "warm-up", None, (gray,), None, 1, defaults.guidance_scale, None, seeds
                )
            else:
                spec = GenerationSpec(
                    "warm-up", None, width, height, 1, defaults.guidance_scale, seeds
                )
            call_started = time.perf_counter()
            result = self.run_batch([spec], record=False)[0]
            if isinstance(result, Exception):
                raise result
            logger.info(
                "%s: warmed %dx%d x%d in %.2fs",
                self.config.name,
                width,
                height,
                images,
                time.perf_counter() - call_started,
            )
            done.append((width, height, images))
        return done

    def _record_previews(self, seconds: float, count: int) -> None:
        self.metrics.previews_made(self.config.name, count, seconds)

    def _record_call(self, images: int, seconds: float) -> None:
        name = self.config.name
        self.metrics.batch_formed(name, images)
        self.metrics.stage_time("model", name, seconds)
        self.metrics.images_generated(name, self.model.family.traits.task, images)

    def encode(self, spec: ModelSpec, result: BatchResult) -> list[GeneratedImage]:
        with self.metrics.timed("encode", self.config.name):
            return self._encode(spec, result)

    @staticmethod
    def _encode(spec: ModelSpec, result: BatchResult) -> list[GeneratedImage]:
        return [
            GeneratedImage(
                encode_image(pixels, spec.output_format, spec.output_compression),
                seed,
                width=pixels.shape[1],
                height=pixels.shape[0],
            )
            for pixels, seed in zip(result.pixels, spec.seeds, strict=True)
        ]

    def gpu(self) -> dict | None:
        return gpu_report(self.model.device)

    def health(self) -> dict:
        info = {
            "model": self.config.name,
            "family": self.config.family,
            "task": self.model.family.traits.task,
            "device": self.model.device,
            "dtype": self.model.dtype,
            "load_seconds": round(self.load_seconds, 3),
            # None on CPU; memory and utilisation of this replica's card on CUDA.
            "gpu": self.gpu(),
        }
        if self.model.weights_report is not None:
            info["custom_weights"] = self.model.weights_report.summary()
        if self.adapters is not None:
            # Least recently used first: the next to go when another is needed.
            info["loras"] = self.adapters.names()
        return info
