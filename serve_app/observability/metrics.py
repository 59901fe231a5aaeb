"""The service's own metrics: one catalog of names, and a recorder the code calls.

`ServiceMetrics` is what the Gateway and the model engine call; it writes to a `MetricSink`.
The Ray deployments pass a sink backed by `ray.serve.metrics` (exported by Ray's metrics
agent next to Serve's own metrics); tests pass `InMemorySink`; by default nothing is kept.
Ray's Prometheus exporter prefixes every name with `ray_` and adds `_total` to counters.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

MetricKind = Literal["counter", "histogram", "gauge"]

# Seconds, from a fast template render to a slow 50-step 2048² call.
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
IMAGE_COUNT_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: MetricKind
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()

    @property
    def prometheus_names(self) -> tuple[str, ...]:
        """The series names Ray's exporter publishes for this metric."""
        base = "ray_" + self.name
        if self.kind == "counter":
            return (base + "_total",)
        if self.kind == "histogram":
            return (base + "_bucket", base + "_count", base + "_sum")
        return (base,)


IMAGES_GENERATED = MetricSpec(
    "image_serving_images_generated",
    "counter",
    "Images made by pipeline calls (warm-up excluded).",
    ("model", "task"),
)
BATCH_IMAGES = MetricSpec(
    "image_serving_batch_images",
    "histogram",
    "Images per pipeline call: the batch size really formed.",
    ("model",),
    IMAGE_COUNT_BUCKETS,
)
QUEUE_WAIT = MetricSpec(
    "image_serving_queue_wait_seconds",
    "histogram",
    "Time a request waited in the model replica's batch queue before its batch started.",
    ("model",),
    SECONDS_BUCKETS,
)
STAGE_SECONDS = MetricSpec(
    "image_serving_stage_seconds",
    "histogram",
    "Time per stage: template, inputs (edit images), model (pipeline call), encode, store.",
    ("stage", "model"),
    SECONDS_BUCKETS,
)
REQUEST_ERRORS = MetricSpec(
    "image_serving_request_errors",
    "counter",
    "Gateway answers with status >= 400, by route, status and error code.",
    ("route", "status", "code"),
)
GPU_MEMORY = MetricSpec(
    "image_serving_gpu_memory_bytes",
    "gauge",
    "GPU memory seen by a model replica (allocated, reserved, free, total).",
    ("model", "kind"),
)
GPU_UTILIZATION = MetricSpec(
    "image_serving_gpu_utilization_percent",
    "gauge",
    "GPU utilisation over the last sample period, as NVML reports it.",
    ("model",),
)

CHAT_TOKENS = MetricSpec(
    "image_serving_chat_tokens",
    "counter",
    "Vision-chat tokens: kind=prompt (text and image tokens in) or completion (out).",
    ("model", "kind"),
)
FIRST_TOKEN_SECONDS = MetricSpec(
    "image_serving_chat_first_token_seconds",
    "histogram",
    "From a vision-chat generate call's start to a request's first token.",
    ("model",),
    SECONDS_BUCKETS,
)
DECODE_RATE = MetricSpec(
    "image_serving_chat_tokens_per_second",
    "histogram",
    "Completion tokens per second of each vision-chat generate call (all its rows).",
    ("model",),
    (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
CANCELLED_ROWS = MetricSpec(
    "image_serving_chat_cancelled",
    "counter",
    "Vision-chat requests whose caller went away while their generate call ran.",
    ("model",),
)
IMAGE_REQUESTS_CANCELLED = MetricSpec(
    "image_serving_image_requests_cancelled",
    "counter",
    "Image requests whose caller went away (or whose job was canceled) before they were "
    "answered: stage=queued (never ran) or running (their pipeline call had begun).",
    ("model", "stage"),
)
STEPS_SAVED = MetricSpec(
    "image_serving_denoising_steps_saved",
    "counter",
    "Denoising steps not run because every request of a pipeline call had gone.",
    ("model",),
)
PREVIEWS = MetricSpec(
    "image_serving_previews",
    "counter",
    "Partial images (previews) decoded and delivered.",
    ("model",),
)
PREVIEW_SECONDS = MetricSpec(
    "image_serving_preview_seconds",
    "histogram",
    "Time to decode and encode the previews of one step (all the images that wanted one).",
    ("model",),
    SECONDS_BUCKETS,
)
DEPENDENCY_FAILURES = MetricSpec(
    "image_serving_dependency_failures",
    "counter",
    "Calls from the Gateway's door to a dependency that failed: dependency=rate_limiter "
    "(Redis; requests pass unlimited or get 503, as on_backend_error says) or key_store.",
    ("dependency",),
)
RESULT_CACHE = MetricSpec(
    "image_serving_result_cache",
    "counter",
    "Result cache lookups and writes for requests it keeps: outcome=hit, miss, stored, "
    "too_large (not kept) or error (the store failed; answered without it).",
    ("model", "outcome"),
)
LORA_EVENTS = MetricSpec(
    "image_serving_lora_events",
    "counter",
    "Per-request LoRA adapters on a model replica: event=applied (once per request that "
    "asked for it), loaded (read from its file), evicted (least recently used, freed).",
    ("model", "lora", "event"),
)

METRICS: tuple[MetricSpec, ...] = (
    IMAGES_GENERATED,
    BATCH_IMAGES,
    QUEUE_WAIT,
    STAGE_SECONDS,
    REQUEST_ERRORS,
    GPU_MEMORY,
    GPU_UTILIZATION,
    CHAT_TOKENS,
    FIRST_TOKEN_SECONDS,
    DECODE_RATE,
    CANCELLED_ROWS,
    IMAGE_REQUESTS_CANCELLED,
    STEPS_SAVED,
    PREVIEWS,
    PREVIEW_SECONDS,
    DEPENDENCY_FAILURES,
    RESULT_CACHE,
    LORA_EVENTS,
)

Stage = Literal["template", "inputs", "model", "encode", "store"]
Dependency = Literal["rate_limiter", "key_store"]
CacheEvent = Literal["hit", "miss", "stored", "too_large", "error"]
LoraEvent = Literal["applied", "loaded", "evicted"]


class MetricSink(Protocol):
    """Where values go; one call per observation, tags as in the metric's spec."""

    def record(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...


class NullSink:
    def record(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        pass


class InMemorySink:
    """Keeps every observation, for tests and for code run outside Ray."""

    def __init__(self) -> None:
        self.observations: dict[str, list[tuple[float, dict[str, str]]]] = defaultdict(list)

    def record(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self.observations[spec.name].append((value, dict(tags)))

    def values(self, spec: MetricSpec, **tags: str) -> list[float]:
        return [
            value
            for value, seen in self.observations[spec.name]
            if all(seen.get(k) == v for k, v in tags.items())
        ]


class ServiceMetrics:
    """What the service measures, in its own words."""

    def __init__(self, sink: MetricSink | None = None):
        self.sink: MetricSink = sink or NullSink()

    def images_generated(self, model: str, task: str, count: int) -> None:
        self.sink.record(IMAGES_GENERATED, count, {"model": model, "task": task})

    def batch_formed(self, model: str, images: int) -> None:
        self.sink.record(BATCH_IMAGES, images, {"model": model})

    def queue_wait(self, model: str, seconds: float) -> None:
        self.sink.record(QUEUE_WAIT, max(seconds, 0.0), {"model": model})

    def stage_time(self, stage: Stage, model: str, seconds: float) -> None:
        self.sink.record(STAGE_SECONDS, seconds, {"stage": stage, "model": model})

    @contextmanager
    def timed(self, stage: Stage, model: str) -> Iterator[None]:
        """Times the block; a block that raises is not recorded (errors are counted)."""
        started = time.perf_counter()
        yield
        self.stage_time(stage, model, time.perf_counter() - started)

    def chat_call(
        self, model: str, prompt_tokens: int, completion_tokens: int, seconds: float
    ) -> None:
        """One vision-chat generate call (every row in it)."""
        self.sink.record(CHAT_TOKENS, prompt_tokens, {"model": model, "kind": "prompt"})
        self.sink.record(CHAT_TOKENS, completion_tokens, {"model": model, "kind": "completion"})
        if seconds > 0 and completion_tokens:
            self.sink.record(DECODE_RATE, completion_tokens / seconds, {"model": model})

    def first_token(self, model: str, seconds: float) -> None:
        self.sink.record(FIRST_TOKEN_SECONDS, seconds, {"model": model})

    def chat_cancelled(self, model: str) -> None:
        self.sink.record(CANCELLED_ROWS, 1, {"model": model})

    def image_request_cancelled(self, model: str, stage: Literal["queued", "running"]) -> None:
        self.sink.record(IMAGE_REQUESTS_CANCELLED, 1, {"model": model, "stage": stage})

    def steps_saved(self, model: str, steps: int) -> None:
        if steps > 0:
            self.sink.record(STEPS_SAVED, steps, {"model": model})

    def previews_made(self, model: str, count: int, seconds: float) -> None:
        self.sink.record(PREVIEWS, count, {"model": model})
        self.sink.record(PREVIEW_SECONDS, seconds, {"model": model})

    def result_cache(self, model: str, outcome: CacheEvent) -> None:
        self.sink.record(RESULT_CACHE, 1, {"model": model, "outcome": outcome})

    def lora_event(self, model: str, lora: str, event: LoraEvent) -> None:
        self.sink.record(LORA_EVENTS, 1, {"model": model, "lora": lora, "event": event})

    def dependency_failed(self, dependency: Dependency) -> None:
        self.sink.record(DEPENDENCY_FAILURES, 1, {"dependency": dependency})

    def request_error(self, route: str, status: int, code: str | None) -> None:
        tags = {"route": route, "status": str(status), "code": code or "none"}
        self.sink.record(REQUEST_ERRORS, 1, tags)

    def gpu(self, model: str, report: dict[str, Any]) -> None:
        """A `gpu.gpu_report()` dict: memory gauges, and utilisation when NVML gave one."""
        for kind, value in report.get("memory", {}).items():
            kind_name = kind.removesuffix("_bytes")
            self.sink.record(GPU_MEMORY, value, {"model": model, "kind": kind_name})
        if report.get("utilization_percent") is not None:
            self.sink.record(GPU_UTILIZATION, report["utilization_percent"], {"model": model})
