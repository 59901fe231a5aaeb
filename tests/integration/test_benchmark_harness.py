"""The benchmark harness against real servers with tiny models (no timing assertions)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from benchmarks.configs import bench_application, load_application, serve_config
from benchmarks.load import run_closed_loop, run_open_loop
from benchmarks.naive_server import running_naive_server
from tests.helpers import REPO, free_port, local_serve_config

pytestmark = pytest.mark.integration


def test_closed_loop_counts_requests_and_batches(base_url):
    result = asyncio.run(
        run_closed_loop(base_url, "sd-tiny", concurrency=4, requests=8, size="64x64", steps=2)
    )
    assert result.errors == 0
    assert sum(result.batch_images.values()) == 8
    assert result.images_per_s > 0 and result.p50_ms <= result.p99_ms
    assert max(result.batch_images) > 1  # concurrent requests met in a batch


def test_open_loop_issues_every_arrival(base_url):
    row = asyncio.run(
        run_open_loop(base_url, "sd-tiny", rate=50, requests=6, size="64x64", steps=2)
    )
    assert row.mode == "open" and row.offered_rps == 50 and row.requests == 6
    assert row.errors == 0 and sum(row.batch_images.values()) == 6
    assert row.concurrency >= 1  # the most requests in flight at once


def local_config(tmp_path: Path, tiny_cache: Path) -> Path:
    """configs/local.yaml with the session's tiny models and a scratch image folder."""
    raw = local_serve_config()
    args = raw["applications"][0]["args"]
    args["tiny_model_cache"] = str(tiny_cache)
    args["storage"]["root"] = str(tmp_path / "images")
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_naive_server_answers_one_image_per_call(tiny_cache, tmp_path):
    config = local_config(tmp_path, tiny_cache)
    app = bench_application(load_application(config), "sd-tiny", 1, REPO)
    path = tmp_path / "naive.yaml"
    path.write_text(yaml.safe_dump(serve_config(app, free_port())))
    with running_naive_server(path, "sd-tiny", free_port(), threads=1) as url:
        row = asyncio.run(run_closed_loop(url, "sd-tiny", 2, 4, "64x64", 2, system="naive-server"))
    assert row.system == "naive-server" and row.errors == 0
    assert row.batch_images == {1: 4}  # no batching: every call makes one image


def test_cpu_sweep_writes_json_markdown_and_plots(tiny_cache, tmp_path):
    # Serve and LitServe rows: tests/integration/test_gpu_script.py (the same sweep code).
    config = local_config(tmp_path, tiny_cache)
    out = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks.sweep", "--config", str(config)]
    command += ["--model", "sd-tiny", "--size", "64x64", "--steps", "2", "--threads", "1"]
    command += ["--concurrency", "2", "--batch-sizes", "2", "--requests", "4", "--rates", "20"]
    command += ["--open-requests", "3", "--raw-calls", "1", "--out", str(out), "--no-progress"]
    command += ["--systems", "raw", "naive"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    [json_path] = out.glob("*-cpu-sd-tiny.json")
    data = json.loads(json_path.read_text())
    assert {"device", "model", "resolution", "steps", "commit", "rows"} <= set(data)
    assert (data["device"], data["model"], data["resolution"]) == ("cpu", "sd-tiny", "64x64")
    assert data["flops_per_image"] > 0 and data["peak_tflops"] > 0
    rows = {(r["system"], r["mode"]): r for r in data["rows"]}
    assert set(rows) == {
        ("raw-diffusers", "in-process"),
        ("naive-server", "closed"),
        ("naive-server", "open"),
    }
    for row in data["rows"]:
        assert row["errors"] == 0
        for key in ("requests", "images_per_s", "qps", "p50_ms", "p95_ms", "p99_ms"):
            assert row[key] is not None
    assert sum(rows[("naive-server", "closed")]["batch_images"].values()) == 4
    assert sum(rows[("naive-server", "open")]["batch_images"].values()) == 3

    markdown = json_path.with_suffix(".md").read_text()
    assert "| naive-server | closed |  | 2 |" in markdown and "× raw img/s" in markdown
    for suffix in ("throughput", "p95"):
        with Image.open(json_path.with_name(f"{json_path.stem}-{suffix}.png")) as image:
            image.verify()
