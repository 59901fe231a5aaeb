"""One command per question: sweep a model over concurrency and batch settings on this
machine, against our service and both baselines, and write JSON, Markdown and PNG plots.

    python -m benchmarks.sweep --config configs/local.yaml --model sd-tiny --size 64x64 \
        --steps 2 --concurrency 1 2 4 8 --batch-sizes 1 4 --requests 24 --rates 4

For each batch setting the service is deployed afresh from the config (the model's
`batching.max_batch_size` overridden); LitServe (at each batch setting) and the naive
server run as their own processes; the raw pipeline runs in this process. With --url, the
service is the one already running there (`make serve`), beside the same baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from benchmarks.configs import bench_application, load_application, model_config, serve_config
from benchmarks.flops import matmul_peak_tflops, pipeline_flops
from benchmarks.litserve_server import running_litserve
from benchmarks.load import parse_burst, run_burst, run_closed_loop, run_open_loop
from benchmarks.naive_server import running_naive_server
from benchmarks.raw import batch_specs, loaded_model, run_raw
from benchmarks.real_models import REAL_MODELS, build_checkpoint
from benchmarks.report import write_reports
from benchmarks.results import REPO, Results, current_commit, row_key
from benchmarks.service import free_port, ray_session, running_service
from benchmarks.stats import Row
from serve_app.config import AppConfig, ModelConfig
from serve_app.models.loading import pick_device

SYSTEMS = ("raw", "naive", "litserve", "serve")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/local.yaml")
    parser.add_argument("--model", required=True, help="a model name in the config")
    parser.add_argument("--size", help="WxH; default: the model's default size")
    parser.add_argument("--steps", type=int, help="default: the model's default steps")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=32, help="requests per HTTP row")
    parser.add_argument("--rates", type=float, nargs="*", default=[], help="open-loop req/s")
    parser.add_argument("--open-requests", type=int, help="requests per open-loop row")
    parser.add_argument(
        "--burst",
        nargs="*",
        default=[],
        metavar="SIZE:COUNT",
        help="a mixed-size burst, all sent at once, per batching system (e.g. 512x512:4 "
        "256x256:8): the row shows the pipeline calls each size was cut into",
    )
    parser.add_argument("--raw-calls", type=int, default=4, help="timed calls per raw batch")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--threads", type=int, help="CPU threads per model process")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs for the model's replica")
    parser.add_argument(
        "--build-real",
        action="store_true",
        help="build the model's random-"
        "weight checkpoint at its config path first (REAL_MODELS name)",
    )
    parser.add_argument(
        "--url", help="measure this running service instead of deploying one (with the baselines)"
    )
    parser.add_argument("--max-batch-size", type=int, help="with --url: the service's setting")
    parser.add_argument("--device-label", help="default: cpu or the GPU's name")
    parser.add_argument("--notes", default="")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    parser.add_argument("--fresh", action="store_true", help="drop today's earlier rows")
    parser.add_argument("--resume", action="store_true", help="skip settings already measured")
    parser.add_argument("--deadline-s", type=float, help="start no row after this many seconds")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:  # refused now, not after the baselines' rows have run
        args.burst = parse_burst(args.burst)
    except ValueError as error:
        parser.error(str(error))
    return args


def describe_device(device: str, threads: int | None) -> tuple[str, str]:
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        memory = f"{props.total_memory / 2**30:.0f} GiB"
        return props.name, f"{props.name} ({memory}), torch {torch.__version__}"
    cores = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    threads_text = f", {threads or torch.get_num_threads()} torch threads per model process"
    return "cpu", f"{cores}-core CPU ({cpu}), torch {torch.__version__}{threads_text}"


class Sweep:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.monotonic()
        self.application = load_application(args.config)
        # Paths made absolute, as every system here and in other processes must read them.
        narrowed = bench_application(self.application, args.model, max(args.batch_sizes), REPO)
        self.config: ModelConfig = model_config(narrowed, args.model)
        self.tiny_cache = Path(AppConfig.model_validate(narrowed["args"]).tiny_model_cache)
        self.size = args.size or self.config.defaults.size
        self.steps = args.steps or self.config.defaults.steps
        self.progress = not args.no_progress
        self.device = pick_device(self.config.device)
        label, detail = describe_device(self.device, args.threads)
        self.results = self._results(args.device_label or label, detail)

    def _results(self, device: str, detail: str) -> Results:
        results = Results(
            device=device,
            model=self.config.name,
            resolution=self.size,
            steps=self.steps,
            commit=current_commit(),
            date=datetime.datetime.now(datetime.UTC).date().isoformat(),
            device_detail=detail,
            family=self.config.family,
            dtype=self.config.dtype if self.device == "cuda" else "float32",
            guidance_scale=self.config.defaults.guidance_scale,
            notes=self.args.notes,
        )
        earlier = self.args.out / f"{results.stem}.json"
        if earlier.exists() and not self.args.fresh:
            # Continue a sweep split over several runs (the GPU machine's time limit).
            kept = Results.load(earlier)
            if (kept.resolution, kept.steps) == (results.resolution, results.steps):
                results.rows = kept.rows
                results.flops_per_image = kept.flops_per_image
                results.flops_by_module = kept.flops_by_module
                results.peak_tflops, results.peak_dtype = kept.peak_tflops, kept.peak_dtype
        return results

    # --- bookkeeping --------------------------------------------------------------------

    def out_of_time(self) -> bool:
        limit = self.args.deadline_s
        return limit is not None and time.monotonic() - self.started > limit

    def wanted(self, system: str, mode: str, max_batch_size: int | None, load: float) -> bool:
        """Whether to measure this setting now: time is left and (with --resume) it is new."""
        if self.out_of_time():
            return False
        if not self.args.resume:
            return True
        return (system, mode, max_batch_size, load) not in {row_key(r) for r in self.results.rows}

    def http_settings(self, system: str, max_batch_size: int | None) -> list[tuple[str, float]]:
        settings = [("closed", float(c)) for c in self.args.concurrency]
        settings += [("open", rate) for rate in self.args.rates]
        return [(m, load) for m, load in settings if self.wanted(system, m, max_batch_size, load)]

    def record(self, row: Row) -> None:
        self.results.add(row)
        self.results.save(self.args.out)
        print(
            f"{row.system:14} {row.mode:10} b={row.max_batch_size} c={row.concurrency} "
            f"{row.images_per_s:.3f} img/s p95 {row.p95_ms:.0f} ms errors {row.errors}",
            flush=True,
        )

    # --- the three systems --------------------------------------------------------------

    def in_process(self) -> None:
        """Peak, FLOPs per image and the raw pipeline: all need the model in this process."""
        if self.args.threads:
            torch.set_num_threads(self.args.threads)
        if self.results.peak_tflops is None:
            self.results.peak_tflops, self.results.peak_dtype = matmul_peak_tflops(self.device)
        batches = {min(c, b) for c in self.args.concurrency for b in self.args.batch_sizes}
        raw_batches = [b for b in sorted(batches) if "raw" in self.args.systems]
        if self.results.flops_per_image is not None and not any(
            self.wanted("raw-diffusers", "in-process", b, 1) for b in raw_batches
        ):
            return  # nothing here needs the model loaded
        with loaded_model(self.config, self.tiny_cache) as loaded:
            if self.results.flops_per_image is None:
                spec = batch_specs(self.config, self.size, self.steps, 1)[0]
                total, by_module = pipeline_flops(loaded.family, loaded.pipeline, spec)
                self.results.flops_per_image, self.results.flops_by_module = total, by_module
            for batch in raw_batches:
                if not self.wanted("raw-diffusers", "in-process", batch, 1):
                    continue
                row = run_raw(
                    loaded,
                    self.config,
                    batch,
                    self.args.raw_calls,
                    self.size,
                    self.steps,
                    self.progress,
                )
                self.record(row)

    def http_rows(self, url: str, system: str, max_batch_size: int | None) -> None:
        shape = (self.size, self.steps)
        common = {"system": system, "max_batch_size": max_batch_size, "progress": self.progress}
        # Untimed: first calls at this size pay lazy initialisation.
        warm = max(max_batch_size or 1, 2)
        asyncio.run(run_closed_loop(url, self.config.name, warm, warm, *shape))
        open_requests = self.args.open_requests or self.args.requests
        for mode, load in self.http_settings(system, max_batch_size):
            if self.out_of_time():
                return
            if mode == "closed":
                run = run_closed_loop(
                    url, self.config.name, int(load), self.args.requests, *shape, **common
                )
            else:
                run = run_open_loop(url, self.config.name, load, open_requests, *shape, **common)
            self.record(asyncio.run(run))
        if self.args.burst and max_batch_size is not None and not self.out_of_time():
            row = asyncio.run(
                run_burst(
                    url,
                    self.config.name,
                    self.args.burst,
                    self.steps,
                    system=system,
                    max_batch_size=max_batch_size,
                )
            )
            self.record(row)

    def bench_config_file(self, folder: Path, max_batch_size: int) -> tuple[dict, Path]:
        options: dict = {}
        if self.args.threads:
            options["num_cpus"] = self.args.threads
        if self.args.gpus:
            options["num_gpus"] = self.args.gpus
        app = bench_application(self.application, self.config.name, max_batch_size, REPO, options)
        config = serve_config(app, free_port())
        path = folder / f"serve-b{max_batch_size}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return config, path

    def naive(self, folder: Path) -> None:
        if not self.http_settings("naive-server", None):
            return
        _, config_path = self.bench_config_file(folder, 1)
        port = free_port()
        with running_naive_server(config_path, self.config.name, port, self.args.threads) as url:
            self.http_rows(url, "naive-server", None)

    def litserve(self, folder: Path) -> None:
        for max_batch_size in self.args.batch_sizes:
            if not self.http_settings("litserve", max_batch_size) or self.out_of_time():
                continue
            _, config_path = self.bench_config_file(folder, max_batch_size)
            with running_litserve(
                config_path, self.config.name, free_port(), max_batch_size, self.args.threads
            ) as url:
                self.http_rows(url, "litserve", max_batch_size)

    def serve(self, folder: Path) -> None:
        if self.args.url:
            # The service as it runs (make serve, a cluster): measured as it is deployed.
            self.http_rows(self.args.url, "serve", self.args.max_batch_size)
            return
        if not any(self.http_settings("serve", b) for b in self.args.batch_sizes):
            return
        cpus = (self.args.threads or 1) + 4  # the model's replica, Gateway, templater, proxy
        with ray_session(num_cpus=cpus, num_gpus=self.args.gpus or None):
            for max_batch_size in self.args.batch_sizes:
                if not self.http_settings("serve", max_batch_size):
                    continue
                config, _ = self.bench_config_file(folder, max_batch_size)
                with running_service(config) as url:
                    self.http_rows(url, "serve", max_batch_size)

    # --- the whole run ------------------------------------------------------------------

    def run(self) -> list[Path]:
        steps: list[tuple[str, Callable[[Path], None]]] = [
            ("naive", self.naive),
            ("litserve", self.litserve),
            ("serve", self.serve),
        ]
        self.in_process()
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            for name, step in steps:
                if name in self.args.systems and not self.out_of_time():
                    step(Path(work))
        return write_reports(self.results, self.args.out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.url:
        if args.max_batch_size is None:
            raise SystemExit("--url needs --max-batch-size: the running service's setting")
        # The baselines batch as the running service does.
        args.batch_sizes = [args.max_batch_size]
    if args.build_real:
        application = load_application(args.config)
        config = model_config(application, args.model)
        if config.name not in REAL_MODELS:
            raise SystemExit(f"--build-real knows {sorted(REAL_MODELS)}, not {config.name!r}")
        build_checkpoint(config.name, (REPO / config.path).resolve(), pick_device("auto"))
    for path in Sweep(args).run():
        print(path)


if __name__ == "__main__":
    main()
