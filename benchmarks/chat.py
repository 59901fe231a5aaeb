"""Vision chat: the service against raw `generate` in this process, at the same batch.

    python -m benchmarks.chat --model glm-4.6v-tiny --batch-sizes 1 4 --requests 16 \
        --max-tokens 32

Every system answers the same conversations (one picture and a short question each,
greedy, at most `--max-tokens` tokens), so they make the same tokens:

- `raw-generate`: the model's processor and `model.generate` on `b` conversations at
  once (left-padded), nothing else: the ceiling at that batch;
- `engine`: the service's ChatEngine in this process on the same `b` conversations (its
  per-row decoder: sampling, stops, grammars, streaming), no HTTP, no queue;
- `serve`: the whole service deployed from the config with `batching.max_batch_size = b`,
  `b` streaming clients (closed loop), over HTTP.

Rows: requests/s, completion tokens/s, time to first token p50/p95 (raw and engine: from
the call's start to the first sampled token; serve: from sending the request to the
first chunk that carries text) and latency p50/p95. Writes
benchmarks/results/<date>-<device>-chat-<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from benchmarks.configs import bench_application, load_application, model_config, serve_config
from benchmarks.results import REPO, current_commit, save_table, slug
from benchmarks.service import free_port, ray_session, running_service
from benchmarks.stats import percentile
from serve_app.models.chat_engine import ChatEngine, ChatTask
from serve_app.models.chat_spec import ChatSpec

RESULTS = REPO / "benchmarks/results"
PICTURE_SIDE = 224


@dataclass
class ChatRow:
    system: str
    batch: int
    requests: int
    seconds: float
    requests_per_s: float
    tokens_per_s: float
    completion_tokens: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    p50_ms: float
    p95_ms: float


def picture() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (PICTURE_SIDE, PICTURE_SIDE, 3), np.uint8)


def question(index: int) -> str:
    return f"What is shown in photo number {index % 10}? Answer briefly."


def spec(index: int, max_tokens: int) -> ChatSpec:
    messages = (
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": question(index)}],
        },
    )
    return ChatSpec(messages, (picture(),), max_tokens, 0.0, 1.0, (index,))


def row(
    system: str,
    batch: int,
    seconds: float,
    tokens: int,
    ttfts: list[float],
    latencies: list[float],
) -> ChatRow:
    requests = len(latencies)
    return ChatRow(
        system=system,
        batch=batch,
        requests=requests,
        seconds=round(seconds, 3),
        requests_per_s=round(requests / seconds, 3),
        tokens_per_s=round(tokens / seconds, 2),
        completion_tokens=tokens,
        ttft_p50_ms=round(percentile(ttfts, 50) * 1000, 1),
        ttft_p95_ms=round(percentile(ttfts, 95) * 1000, 1),
        p50_ms=round(percentile(latencies, 50) * 1000, 1),
        p95_ms=round(percentile(latencies, 95) * 1000, 1),
    )


class FirstToken(LogitsProcessor):
    """Notes when generate asks for its first token (the prefill is done)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.at is None:
            self.at = time.perf_counter()
        return scores


def run_raw(engine: ChatEngine, batch: int, requests: int, max_tokens: int) -> ChatRow:
    """The processor and `model.generate`, `batch` conversations per call."""
    model = engine.chat.model
    eos = sorted(engine.tokens.eos_ids)
    config = GenerationConfig(
        max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos, pad_token_id=engine.pad_id
    )
    tokens, ttfts, latencies = 0, [], []
    started = time.perf_counter()
    for first in range(0, requests, batch):
        call_started = time.perf_counter()
        inputs = [engine._prepare(spec(i, max_tokens)).inputs for i in range(first, first + batch)]
        collated = engine._collate(inputs)
        marker = FirstToken()
        with torch.inference_mode():
            out = model.generate(
                **collated,
                generation_config=config,
                logits_processor=LogitsProcessorList([marker]),
            )
        ended = time.perf_counter()
        new = out[:, collated["input_ids"].shape[1] :]
        for line in new.tolist():
            tokens += next((k + 1 for k, t in enumerate(line) if t in eos), len(line))
        ttfts += [(marker.at or ended) - call_started] * batch
        latencies += [ended - call_started] * batch
    return row("raw-generate", batch, time.perf_counter() - started, tokens, ttfts, latencies)


def run_engine(engine: ChatEngine, batch: int, requests: int, max_tokens: int) -> ChatRow:
    """The service's engine in this process: the same conversations, `batch` per call."""
    tokens, ttfts, latencies = 0, [], []
    started = time.perf_counter()
    for first in range(0, requests, batch):
        call_started = time.perf_counter()
        tasks = [ChatTask(spec(i, max_tokens)) for i in range(first, first + batch)]
        results = engine.run_batch(tasks, record=False)
        ended = time.perf_counter()
        for result in results:
            if isinstance(result, Exception):
                raise result
            tokens += result.completion_tokens
            # first_token_s counts from the generate call's start; preparing came before.
            ttfts.append(ended - call_started - result.generate_s + (result.first_token_s or 0))
            latencies.append(ended - call_started)
    return row("engine", batch, time.perf_counter() - started, tokens, ttfts, latencies)


def data_url() -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture()).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def run_serve(url: str, model: str, batch: int, requests: int, max_tokens: int) -> ChatRow:
    """`batch` clients, each streaming one request after another, until `requests`."""
    image = data_url()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    tokens, ttfts, latencies = 0, [], []

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            index = queue.get_nowait()
            body = {
                "model": model,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": image}},
                            {"type": "text", "text": question(index)},
                        ],
                    }
                ],
                "max_tokens": max_tokens,
                "temperature": 0,
                "seed": index,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            sent = time.perf_counter()
            first: float | None = None
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {await response.aread()!r}")
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        tokens += chunk["usage"]["completion_tokens"]
                    deltas = [c["delta"] for c in chunk.get("choices", [])]
                    if first is None and any(
                        d.get("content") or d.get("reasoning_content") for d in deltas
                    ):
                        first = time.perf_counter()
            ended = time.perf_counter()
            ttfts.append((first or ended) - sent)
            latencies.append(ended - sent)

    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(batch)))
        seconds = time.perf_counter() - started
    return row("serve", batch, seconds, tokens, ttfts, latencies)


def serve_rows(args: argparse.Namespace, application: dict[str, Any]) -> list[ChatRow]:
    rows = []
    with ray_session(num_cpus=(args.threads or 1) + 4):
        for batch in args.batch_sizes:
            app = bench_application(application, args.model, batch, REPO)
            with running_service(serve_config(app, free_port())) as url:
                # One request first: the replica's first call pays for lazy setup.
                asyncio.run(run_serve(url, args.model, 1, 1, args.max_tokens))
                rows.append(
                    asyncio.run(run_serve(url, args.model, batch, args.requests, args.max_tokens))
                )
    return rows


def markdown(meta: dict[str, Any], rows: list[ChatRow]) -> str:
    lines = [
        f"# Vision chat: {meta['model']} on {meta['device_detail']}",
        "",
        f"{meta['requests']} requests per row, a {PICTURE_SIDE}² picture and a short question "
        f"each, greedy, at most {meta['max_tokens']} tokens; commit {meta['commit']}.",
        "",
        "| system | batch | requests/s | tokens/s | TTFT p50 / p95 ms | latency p50 / p95 ms "
        "| tokens/s vs raw |",
        "|---|---|---|---|---|---|---|",
    ]
    raw = {r.batch: r for r in rows if r.system == "raw-generate"}
    for r in rows:
        base = raw.get(r.batch)
        versus = f"{r.tokens_per_s / base.tokens_per_s:.2f}" if base and base.tokens_per_s else ""
        lines.append(
            f"| {r.system} | {r.batch} | {r.requests_per_s} | {r.tokens_per_s} "
            f"| {r.ttft_p50_ms} / {r.ttft_p95_ms} | {r.p50_ms} / {r.p95_ms} | {versus} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/local.yaml")
    parser.add_argument("--model", default="glm-4.6v-tiny")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch threads in each model process")
    parser.add_argument("--systems", nargs="+", default=["raw-generate", "engine", "serve"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    application = load_application(args.config)
    entry = next((m for m in application["args"]["models"] if m["name"] == args.model), None)
    if entry is None:
        raise SystemExit(f"model {args.model!r} is not in {args.config}")
    limits = entry.setdefault("chat", {}).setdefault("limits", {})
    limits["max_output_tokens"] = max(limits.get("max_output_tokens", 0), args.max_tokens)
    config = model_config(application, args.model)
    tiny_cache = (REPO / application["args"].get("tiny_model_cache", "data/tiny-models")).resolve()
    rows: list[ChatRow] = []
    if {"raw-generate", "engine"} & set(args.systems):
        engine = ChatEngine(config, tiny_cache, cpu_threads=args.threads)
        engine.run_batch([ChatTask(spec(0, args.max_tokens))], record=False)  # lazy setup
        for batch in args.batch_sizes:
            if "raw-generate" in args.systems:
                rows.append(run_raw(engine, batch, args.requests, args.max_tokens))
            if "engine" in args.systems:
                rows.append(run_engine(engine, batch, args.requests, args.max_tokens))
        del engine
    if "serve" in args.systems:
        rows += serve_rows(args, application)
    device = "cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu"
    meta = {
        "model": args.model,
        "device": device,
        "device_detail": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "threads": args.threads or torch.get_num_threads(),
        "commit": current_commit(),
        "date": date.today().isoformat(),
    }
    report = markdown(meta, rows)
    save_table(
        args.out, f"{meta['date']}-{slug(device)}-chat-{slug(args.model)}", meta, rows, report
    )
    print(report)


if __name__ == "__main__":
    main()
