"""Closed-loop load against a running service: fixed concurrency, fixed request count.

    python -m benchmarks.load --url http://127.0.0.1:8000 --model sd-tiny \
        --concurrency 1 4 16 --requests 64 --size 256x256 --steps 4

Prints one JSON row per concurrency: requests/s, images/s, latency percentiles,
errors and the batch sizes the service really formed (from `x-batch-images`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass

import httpx


@dataclass
class LoadResult:
    model: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    qps: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    batch_images: dict[int, int]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run_closed_loop(
    url: str, model: str, concurrency: int, requests: int, size: str, steps: int, n: int = 1
) -> LoadResult:
    latencies: list[float] = []
    batches: Counter[int] = Counter()
    errors = 0
    images = 0
    next_index = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, images, next_index
        while next_index < requests:
            index = next_index
            next_index += 1
            body = {
                "model": model,
                "prompt": f"benchmark prompt {index}",
                "n": n,
                "size": size,
                "steps": steps,
                "seed": index,
            }
            started = time.perf_counter()
            try:
                response = await client.post("/v1/images/generations", json=body)
            except httpx.HTTPError:
                errors += 1
                continue
            if response.status_code != 200:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            images += len(response.json()["data"])
            batches[int(response.headers.get("x-batch-images", 0))] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    done = len(latencies)
    return LoadResult(
        model=model,
        concurrency=concurrency,
        requests=requests,
        errors=errors,
        seconds=round(seconds, 3),
        qps=round(done / seconds, 3),
        images_per_s=round(images / seconds, 3),
        p50_ms=round(percentile(latencies, 50), 1),
        p95_ms=round(percentile(latencies, 95), 1),
        p99_ms=round(percentile(latencies, 99), 1),
        batch_images=dict(sorted(batches.items())),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n", type=int, default=1)
    args = parser.parse_args()
    for concurrency in args.concurrency:
        result = asyncio.run(
            run_closed_loop(
                args.url, args.model, concurrency, args.requests, args.size, args.steps, args.n
            )
        )
        print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
