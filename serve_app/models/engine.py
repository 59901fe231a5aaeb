"""A model in one process: load once, run batches, encode results.

The Ray deployment is a thin shell around this; tests drive it directly too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from serve_app.config import ModelConfig, parse_size
from serve_app.errors import ErrorCode, ServiceUnavailableError
from serve_app.families import Batching, Task
from serve_app.images import encode_image
from serve_app.models.batch_queue import BatchBudget, BatchCost
from serve_app.models.loading import load_model
from serve_app.models.spec import EditSpec, GeneratedImage, GenerationSpec
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
# Told (job ids, step, total) as a pipeline call that holds durable jobs advances.
ProgressSink = Callable[[list[str], int, int], None]


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
        # One pipeline call at a time: diffusers pipelines are not re-entrant.
        self._lock = threading.Lock()
        logger.info("%s loaded on %s in %.2fs", config.name, self.model.device, self.load_seconds)

    def run_batch(
        self, specs: list[ModelSpec], *, record: bool = True
    ) -> list[BatchResult | Exception]:
        """Group specs by batch key, run one pipeline call per group, keep request order.

        A group that fails gives its requests the exception; other groups still run.
        `record=False` keeps a call (the warm-up) out of the metrics.
        """
        family = self.model.family
        shares_calls = family.traits.batching is Batching.SHARED
        groups: dict[tuple, list[int]] = {}
        for index, spec in enumerate(specs):
            key = spec.batch_key() if shares_calls else (index,)
            groups.setdefault(key, []).append(index)
        results: list[BatchResult | Exception | None] = [None] * len(specs)
        for indices in groups.values():
            group = [specs[i] for i in indices]
            try:
                with self._lock:
                    started = time.perf_counter()
                    images = family.run(self.model.pipeline, group, self._on_step(group))
                    seconds = time.perf_counter() - started
            except torch.cuda.OutOfMemoryError:
                error = out_of_memory(self.config.name)
                for index in indices:
                    results[index] = error
                continue
            except Exception as error:
                logger.exception("%s: pipeline call failed", self.config.name)
                for index in indices:
                    results[index] = error
                continue
            total = len(images)
            if record:
                self._record_call(total, seconds)
            offset = 0
            for index, spec in zip(indices, group, strict=True):
                results[index] = BatchResult(images[offset : offset + spec.n], total)
                offset += spec.n
        return results  # type: ignore[return-value]

    def batch_budget(self) -> BatchBudget:
        batching = self.config.batching
        return BatchBudget(batching.max_batch_size, batching.work_budget())

    def batch_cost(self, spec: ModelSpec) -> BatchCost:
        """A request's weight in default images (n x pixels x steps over the model's
        default size and steps) and the key it shares pipeline calls by."""
        work = spec.n * spec.width * spec.height * spec.steps / self._default_work
        shares_calls = self.model.family.traits.batching is Batching.SHARED
        return BatchCost(spec.n, work, spec.batch_key() if shares_calls else None)

    def _on_step(self, group: list[ModelSpec]) -> Callable[[int], None] | None:
        job_ids = [spec.job_id for spec in group if spec.job_id]
        if not job_ids or self.progress is None:
            return None
        progress, total = self.progress, group[0].steps
        return lambda step: progress(job_ids, step, total)

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
        return info
