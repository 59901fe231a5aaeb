"""HTTP load against a running service: closed loop (fixed concurrency) or open loop
(fixed arrival rate).

    python -m benchmarks.load --url http://127.0.0.1:8000 --model sd-tiny \
        --concurrency 1 4 16 --requests 64 --size 256x256 --steps 4
    python -m benchmarks.load --url http://127.0.0.1:8000 --model sd-tiny --rate 2 5 --requests 64

Prints one JSON row per setting: requests/s, images/s, latency percentiles, errors and the
batch sizes the service really formed (from `x-batch-images`). Any server that answers the
OpenAI-shaped `POST /v1/images/generations` can be measured, the naive baseline included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from tqdm import tqdm

from benchmarks.stats import Row, measured_row

# Open loop: never let the client itself become the queue.
MAX_OPEN_CONNECTIONS = 1024


@dataclass
class RequestShape:
    model: str
    size: str
    steps: int
    n: int = 1

    def body(self, index: int) -> dict:
        # Distinct prompts and seeds: nothing can be served from a cache.
        return {
            "model": self.model,
            "prompt": f"benchmark prompt {index}",
            "n": self.n,
            "size": self.size,
            "steps": self.steps,
            "seed": index,
        }


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    batches: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    images: int = 0

    async def send(
        self, client: httpx.AsyncClient, shape: RequestShape, index: int, started: float
    ) -> None:
        """One request; `started` is when it was due, so client-side waiting counts too."""
        try:
            response = await client.post("/v1/images/generations", json=shape.body(index))
        except httpx.HTTPError:
            self.errors += 1
            return
        if response.status_code != 200:
            self.errors += 1
            return
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        body = response.json()
        self.images += len(body["data"])
        # A header from the service and the naive server; LitServe's body carries it.
        shared = response.headers.get("x-batch-images") or body.get("batch_images", 0)
        self.batches[int(shared)] += 1

    def row(self, *, requests: int, seconds: float, **settings: Any) -> Row:
        return measured_row(
            requests=requests,
            errors=self.errors,
            seconds=seconds,
            images=self.images,
            latencies_ms=self.latencies_ms,
            batch_images=dict(self.batches),
            **settings,
        )


def _progress(total: int, label: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=label, unit="req", disable=not enabled, dynamic_ncols=True)


async def run_closed_loop(
    url: str,
    model: str,
    concurrency: int,
    requests: int,
    size: str,
    steps: int,
    n: int = 1,
    *,
    system: str = "serve",
    max_batch_size: int | None = None,
    progress: bool = False,
    timeout_s: float = 600,
) -> Row:
    """`concurrency` clients, each sending its next request as soon as the last one returns."""
    shape = RequestShape(model, size, steps, n)
    tally = Tally()
    next_index = 0
    bar = _progress(requests, f"{system} c={concurrency} b={max_batch_size}", progress)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests:
            index = next_index
            next_index += 1
            await tally.send(client, shape, index, time.perf_counter())
            bar.update()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    bar.close()
    return tally.row(
        system=system,
        mode="closed",
        concurrency=concurrency,
        max_batch_size=max_batch_size,
        requests=requests,
        seconds=seconds,
    )


def arrival_times(rate: float, count: int, poisson: bool = True, seed: int = 0) -> list[float]:
    """Offsets in seconds from the start: exponential gaps (Poisson arrivals) or fixed ones."""
    if rate <= 0:
        raise ValueError("the arrival rate must be positive")
    draw = random.Random(seed)
    offsets, now = [], 0.0
    for _ in range(count):
        offsets.append(now)
        now += draw.expovariate(rate) if poisson else 1.0 / rate
    return offsets


async def run_open_loop(
    url: str,
    model: str,
    rate: float,
    requests: int,
    size: str,
    steps: int,
    n: int = 1,
    *,
    poisson: bool = True,
    seed: int = 0,
    system: str = "serve",
    max_batch_size: int | None = None,
    progress: bool = False,
    timeout_s: float = 600,
) -> Row:
    """`requests` arrivals at `rate` per second, sent whether or not earlier ones returned.

    Latency runs from each request's due time, so queueing anywhere is counted. The row's
    `concurrency` is the most requests that were in flight at once.
    """
    shape = RequestShape(model, size, steps, n)
    tally = Tally()
    in_flight = peak = 0
    bar = _progress(requests, f"{system} rate={rate}/s b={max_batch_size}", progress)

    async def one(client: httpx.AsyncClient, index: int, due: float) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await tally.send(client, shape, index, due)
        finally:
            in_flight -= 1
            bar.update()

    limits = httpx.Limits(max_connections=MAX_OPEN_CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        started = time.perf_counter()
        tasks = []
        for index, offset in enumerate(arrival_times(rate, requests, poisson, seed)):
            delay = started + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, index, started + offset)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
    bar.close()
    return tally.row(
        system=system,
        mode="open",
        concurrency=peak,
        max_batch_size=max_batch_size,
        requests=requests,
        seconds=seconds,
        offered_rps=rate,
    )


def parse_burst(words: list[str]) -> dict[str, int]:
    """["512x512:4", "256x256:8"] -> {"512x512": 4, "256x256": 8}."""
    burst = {}
    for word in words:
        size, _, count = word.partition(":")
        if not size or not count.isdigit() or int(count) < 1:
            raise ValueError(f"a burst part is SIZE:COUNT, like 512x512:4; got {word!r}")
        burst[size] = int(count)
    return burst


async def run_burst(
    url: str,
    model: str,
    burst: dict[str, int],
    steps: int,
    *,
    system: str = "serve",
    max_batch_size: int | None = None,
    timeout_s: float = 600,
) -> Row:
    """Every request of a mixed-size burst sent at once (sizes interleaved), to show how
    the service cuts it into pipeline calls: the row keeps the call sizes per request size."""
    left, order = dict(burst), []
    while any(left.values()):
        for size in burst:
            if left[size]:
                order.append(size)
                left[size] -= 1
    tallies = {size: Tally() for size in burst}
    limits = httpx.Limits(max_connections=len(order))
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                tallies[size].send(client, RequestShape(model, size, steps), index, started)
                for index, size in enumerate(order)
            )
        )
        seconds = time.perf_counter() - started
    total = Tally()
    for tally in tallies.values():
        total.latencies_ms += tally.latencies_ms
        total.batches.update(tally.batches)
        total.errors += tally.errors
        total.images += tally.images
    row = total.row(
        system=system,
        mode="burst",
        concurrency=len(order),
        max_batch_size=max_batch_size,
        requests=len(order),
        seconds=seconds,
    )
    row.batches_by_size = {size: dict(sorted(t.batches.items())) for size, t in tallies.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--rate", type=float, nargs="*", default=[], help="open-loop arrivals/s")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n", type=int, default=1)
    args = parser.parse_args()
    common = (args.url, args.model)
    shape = (args.requests, args.size, args.steps, args.n)
    for concurrency in args.concurrency:
        row = asyncio.run(run_closed_loop(*common, concurrency, *shape, progress=True))
        print(json.dumps(row.to_json()), flush=True)
    for rate in args.rate:
        row = asyncio.run(run_open_loop(*common, rate, *shape, progress=True))
        print(json.dumps(row.to_json()), flush=True)


if __name__ == "__main__":
    main()
