"""The GPU benchmark script, rehearsed on this CPU: the same two phases (baselines, then
serve) that the GPU machine runs, on the tiny models, end to end. It must write every
model's results with a row per system and setting, so the script cannot break unseen
before a GPU is at hand. No timing assertions: these are tiny models on a shared CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.integration.test_benchmark_harness import local_config

pytestmark = pytest.mark.integration


def run_phase(phase: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "benchmarks/gpu/run.sh", phase],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,  # two sweeps, each stopped by run.sh within 600 s
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_cpu_rehearsal_writes_every_row_of_both_phases(tiny_cache, tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "BENCH_PROFILE": "cpu",
        "BENCH_CONFIG": str(local_config(tmp_path, tiny_cache)),
        "PYTHON": sys.executable,
        "RESULTS": str(results),
        "OUT": str(out),
    }
    run_phase("baselines", env)
    run_phase("serve", env)

    for model in ("sd-tiny", "z-image-tiny"):
        [json_path] = out.glob(f"*-cpu-{model}.json")
        data = json.loads(json_path.read_text())
        assert (data["model"], data["resolution"]) == (model, "64x64")
        assert data["flops_per_image"] > 0 and data["peak_tflops"] > 0
        rows = {(r["system"], r["concurrency"], r["max_batch_size"]): r for r in data["rows"]}
        assert set(rows) == {
            ("raw-diffusers", 1, 1),
            ("raw-diffusers", 1, 8),
            ("naive-server", 1, None),
            ("naive-server", 8, None),
            ("litserve", 1, 8),
            ("litserve", 8, 8),
            ("serve", 1, 8),
            ("serve", 8, 8),
        }
        for key, row in rows.items():
            assert row["errors"] == 0, key
            if key[0] != "raw-diffusers":
                assert sum(row["batch_images"].values()) == row["requests"] == 8, key
        # Serve at concurrency 1 never waits for company: every call holds one request.
        assert rows[("serve", 1, 8)]["batch_images"] == {"1": 8}
        markdown = json_path.with_suffix(".md").read_text()
        assert "| serve | closed | 8 | 8 |" in markdown and "× LitServe img/s" in markdown
        for phase in ("baselines", "serve"):
            assert (out / f"{model}-{phase}.log").stat().st_size > 0
