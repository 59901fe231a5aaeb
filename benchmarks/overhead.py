"""Where a request's CPU goes: per process of a running service, and in our FastAPI app alone.

    python -m benchmarks.overhead --url http://127.0.0.1:8000 --model sd-tiny \
        --concurrency 16 --requests 300 --size 64x64 --steps 4
    python -m benchmarks.overhead --app-only --requests 300

With --url: CPU seconds of every local Ray process (proxy, Gateway, each replica) over a
closed-loop load, divided by the requests served (Linux /proc, this machine only).
--app-only: the Gateway's FastAPI app in this process over instant model backends, so
what is left is our own HTTP, validation, planning and response code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from benchmarks.load import run_closed_loop

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ray_processes() -> dict[int, str]:
    """pid -> Ray's process title, for the Ray processes on this machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::"):
            found[int(entry.name)] = title.split(" ")[0]
        elif Path(title).name == "haproxy":  # Ray's HAProxy ingress, where enabled
            found[int(entry.name)] = "haproxy"
    return found


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def per_process(args: argparse.Namespace) -> None:
    processes = ray_processes()
    before = {pid: cpu_seconds(pid) for pid in processes}
    row = asyncio.run(
        run_closed_loop(
            args.url, args.model, args.concurrency, args.requests, args.size, args.steps
        )
    )
    served = args.requests - row.errors
    print(f"{row.images_per_s:.1f} img/s at concurrency {args.concurrency}, {served} served")
    spent = []
    for pid, title in processes.items():
        start, end = before[pid], cpu_seconds(pid)
        if start is not None and end is not None and end > start:
            spent.append((end - start, title))
    for seconds, title in sorted(spent, reverse=True)[:8]:
        print(f"{1000 * seconds / served:7.2f} ms CPU per request  {title}")


def app_only(args: argparse.Namespace) -> None:
    import httpx
    import numpy as np

    from benchmarks.configs import load_application
    from benchmarks.results import REPO
    from serve_app.api.app import create_app, gateway_parts
    from serve_app.config import AppConfig
    from serve_app.images import encode_image
    from serve_app.models.spec import GeneratedImage, GenerationResult
    from serve_app.prompts import PromptCatalog
    from serve_app.service.backends import CatalogPrompts

    png = encode_image(np.zeros((64, 64, 3), np.uint8), "png")

    class InstantModel:
        async def run(self, spec):
            return GenerationResult([GeneratedImage(png, s, 64, 64) for s in spec.seeds], 1)

        async def health(self):
            return {}

    application_args = load_application(REPO / "configs/local.yaml")["args"]
    application_args["storage"]["root"] = "/tmp/overhead-images"
    application_args["jobs"]["store_url"] = "sqlite:////tmp/overhead-jobs.sqlite3"
    config = AppConfig.model_validate(application_args)
    prompts = CatalogPrompts(PromptCatalog.from_yaml(config.resolve_path(config.templates_path)))
    models = {model.name: InstantModel() for model in config.models}
    app = create_app(gateway_parts(config, prompts, models))
    body = {"model": args.model, "prompt": "a cup", "size": args.size, "steps": args.steps}

    async def measure() -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            for _ in range(20):  # untimed: first calls pay lazy imports
                await http.post("/v1/images/generations", json=body)
            started = time.process_time()
            for _ in range(args.requests):
                response = await http.post("/v1/images/generations", json=body)
                response.raise_for_status()
            return time.process_time() - started

    seconds = asyncio.run(measure())
    print(
        f"{1000 * seconds / args.requests:.2f} ms CPU per request in this process "
        "(the app and an in-process HTTP client)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="sd-tiny")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--app-only", action="store_true")
    args = parser.parse_args()
    (app_only if args.app_only else per_process)(args)


if __name__ == "__main__":
    main()
