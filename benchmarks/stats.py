"""One row of benchmark results, and the arithmetic every system's measurement shares."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class Row:
    """One measured setting of one system, as the results file stores it."""

    system: str  # "serve", "litserve", "naive-server" or "raw-diffusers"
    mode: str  # "closed" (fixed concurrency), "open" (fixed arrival rate) or "in-process"
    concurrency: int
    max_batch_size: int | None
    requests: int
    errors: int
    seconds: float
    qps: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    # Pipeline-call sizes in images -> how many requests saw that size.
    batch_images: dict[int, int] = field(default_factory=dict)
    # Open loop only: the arrival rate asked for.
    offered_rps: float | None = None
    # Filled in when FLOPs per image and the card's peak are known.
    tflops: float | None = None
    peak_fraction: float | None = None
    # Burst only: request size -> {pipeline-call size in images -> requests}.
    batches_by_size: dict[str, dict[int, int]] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # JSON keys are strings; keep the histogram readable and sorted.
        data["batch_images"] = {str(k): v for k, v in sorted(self.batch_images.items())}
        if self.batches_by_size is not None:
            data["batches_by_size"] = {
                size: {str(k): v for k, v in sorted(counts.items())}
                for size, counts in self.batches_by_size.items()
            }
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        values = dict(data)
        values["batch_images"] = {int(k): v for k, v in (data.get("batch_images") or {}).items()}
        if data.get("batches_by_size") is not None:
            values["batches_by_size"] = {
                size: {int(k): v for k, v in counts.items()}
                for size, counts in data["batches_by_size"].items()
            }
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            if values.get(key) is None:
                values[key] = float("nan")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def measured_row(
    *,
    system: str,
    mode: str,
    concurrency: int,
    max_batch_size: int | None,
    requests: int,
    errors: int,
    seconds: float,
    images: int,
    latencies_ms: list[float],
    batch_images: dict[int, int] | None = None,
    offered_rps: float | None = None,
) -> Row:
    done = len(latencies_ms)
    return Row(
        system=system,
        mode=mode,
        concurrency=concurrency,
        max_batch_size=max_batch_size,
        requests=requests,
        errors=errors,
        seconds=round(seconds, 3),
        qps=round(done / seconds, 3) if seconds > 0 else 0.0,
        images_per_s=round(images / seconds, 3) if seconds > 0 else 0.0,
        p50_ms=round(percentile(latencies_ms, 50), 1),
        p95_ms=round(percentile(latencies_ms, 95), 1),
        p99_ms=round(percentile(latencies_ms, 99), 1),
        batch_images=dict(sorted((batch_images or {}).items())),
        offered_rps=offered_rps,
    )
