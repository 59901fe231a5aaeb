"""The Serve configs a benchmark deploys, the GPU run's config and command, the wheelhouse."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from benchmarks.configs import bench_application, load_application, serve_config
from benchmarks.gpu.prepare_wheels import (
    BASELINE_REQUIREMENTS,
    DEVICE_PROVIDED,
    MIB,
    pack,
    project_name,
    requirement_name,
    serve_requirements,
    without_jars,
)
from benchmarks.load import arrival_times
from benchmarks.real_models import REAL_MODELS
from benchmarks.sweep import parse_args
from serve_app.config import AppConfig

REPO = Path(__file__).resolve().parents[2]
GPU_CONFIG = REPO / "benchmarks/gpu/models.yaml"


def test_bench_application_narrows_to_one_model_with_the_rows_batching():
    app = bench_application(
        load_application(REPO / "configs/local.yaml"), "sd-tiny", 2, REPO, {"num_cpus": 2}
    )
    config = AppConfig.model_validate(app["args"])
    assert [m.name for m in config.models] == ["sd-tiny"]
    model = config.models[0]
    assert model.batching.max_batch_size == 2 and model.limits.max_n == 2
    assert Path(config.templates_path).is_absolute() and Path(config.tiny_model_cache).is_absolute()
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == {"Gateway", "PromptTemplater", "sd-tiny"}
    assert deployments["sd-tiny"]["ray_actor_options"]["num_cpus"] == 2
    assert deployments["sd-tiny"]["max_ongoing_requests"] >= 4
    schema = ServeDeploySchema.model_validate(serve_config(app, 8123))
    assert schema.http_options.port == 8123 and schema.applications[0].route_prefix == "/"


def test_unknown_model_is_refused():
    with pytest.raises(SystemExit):
        bench_application(load_application(REPO / "configs/local.yaml"), "nope", 1, REPO)


def test_gpu_config_is_a_valid_serve_config_of_real_models_on_a_gpu_each():
    raw = yaml.safe_load(GPU_CONFIG.read_text())
    app = ServeDeploySchema.model_validate(raw).applications[0]
    config = AppConfig.model_validate(app.args)
    overrides = {d.name: d for d in app.deployments}
    for model in config.models:
        assert model.name in REAL_MODELS
        assert model.device == "cuda" and model.dtype == "bfloat16"
        assert overrides[model.name].ray_actor_options.num_gpus == 1
    sizes = {m.name: (m.defaults.size, m.defaults.steps) for m in config.models}
    assert sizes["sd15"][0] == "512x512"
    assert sizes["z-image-turbo"] == ("1024x1024", 8) and sizes["sdxl"][0] == "1024x1024"


def dry_run(phase: str, **env: str) -> list[list[str]]:
    printed = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu/run.sh"), phase],
        env={**os.environ, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [shlex.split(line) for line in printed.splitlines()]


@pytest.mark.parametrize(
    ("phase", "systems"), [("baselines", ["raw", "naive", "litserve"]), ("serve", ["serve"])]
)
def test_each_gpu_phase_sweeps_both_models_with_a_deadline(phase, systems):
    commands = dry_run(phase)
    assert [words[:3] for words in commands] == [["python3", "-m", "benchmarks.sweep"]] * 2
    parsed = [parse_args(words[3:]) for words in commands]
    assert [args.model for args in parsed] == ["sd15", "z-image-turbo"]
    for args in parsed:
        assert args.gpus == 1 and args.build_real and args.resume
        assert args.systems == systems and args.config == Path("benchmarks/gpu/models.yaml")
        assert args.concurrency == [1, 8] and args.batch_sizes == [8]
    # Both sweeps of a phase start no row after 260 s: the phase fits one device call.
    assert sum(args.deadline_s for args in parsed) <= 260


def test_the_cpu_rehearsal_runs_the_same_sweeps_on_tiny_models():
    gpu = [parse_args(words[3:]) for words in dry_run("serve")]
    cpu = [parse_args(words[3:]) for words in dry_run("serve", BENCH_PROFILE="cpu")]
    assert [args.model for args in cpu] == ["sd-tiny", "z-image-tiny"]
    for on_gpu, on_cpu in zip(gpu, cpu, strict=True):
        assert on_cpu.gpus == 0 and not on_cpu.build_real
        for same in ("systems", "concurrency", "batch_sizes", "resume"):
            assert getattr(on_cpu, same) == getattr(on_gpu, same)


def test_an_unknown_phase_is_refused():
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu/run.sh"), "sd15"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "baselines or serve" in done.stderr


def test_arrivals_fixed_and_poisson():
    assert arrival_times(4, 3, poisson=False) == [0.0, 0.25, 0.5]
    poisson = arrival_times(4, 50, seed=1)
    assert len(poisson) == 50 and poisson == sorted(poisson) and poisson[0] == 0.0
    assert poisson == arrival_times(4, 50, seed=1)
    with pytest.raises(ValueError):
        arrival_times(0, 3)


def fake_wheel(path: Path, files: dict[str, bytes], executable: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            mode = 0o755 if name == executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            wheel.writestr(info, data)
    return path


# Imports every module a Serve replica of the GPU config loads at start, and prints the
# distributions they come from.
STARTUP_IMPORTS = """
import importlib, pkgutil, sys
from importlib.metadata import packages_distributions
import serve_app.graph, deployments
for module in pkgutil.iter_modules(deployments.__path__):
    importlib.import_module("deployments." + module.name)
owners = packages_distributions()
for top in sorted({name.split(".")[0] for name in sys.modules}):
    for dist in owners.get(top, []):
        print(dist)
"""


def requirement_closure(requirements: list[str]) -> set[str]:
    """Every distribution these requirements pull in, read from the installed metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = requirement_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            declared = requires(requirement.name) or []
        except PackageNotFoundError:
            continue  # not installed here: its own needs cannot be read, only its name
        for line in declared:
            needed = Requirement(line)
            extras = requirement.extras or {""}
            if needed.marker is None or any(
                needed.marker.evaluate({"extra": extra, "python_version": "3.12"})
                for extra in extras
            ):
                todo.append(needed)
    return seen


def test_the_wheel_parts_cover_every_distribution_a_replica_imports_at_start():
    """The GPU machine has torch and a few more, nothing else: a distribution the service
    imports at start that no carried requirement pulls in fails the serve phase there."""
    printed = subprocess.run(
        [sys.executable, "-c", STARTUP_IMPORTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    imported = {requirement_name(line) for line in printed.split()} - {"image-serving"}
    carried = requirement_closure(BASELINE_REQUIREMENTS + serve_requirements())
    assert {"sqlalchemy", "alembic", "llguidance", "redis", "ray"} <= carried
    on_device = requirement_closure(sorted(DEVICE_PROVIDED))  # torch brings sympy, networkx...
    # Imported only where installed (try/except ImportError in anyio, httpcore, jsonschema).
    optional = {"sniffio", "jsonpointer", "rfc3339-validator"}
    assert imported - carried - on_device - optional == set()


def test_ray_wheel_loses_its_jars_and_keeps_modes_and_record(tmp_path):
    source = fake_wheel(
        tmp_path / "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl",
        {
            "ray/__init__.py": b"",
            "ray/core/raylet": b"\x7fELF",
            "ray/jars/ray_dist.jar": b"x" * 1000,
            "ray-2.60.0.dist-info/RECORD": b"stale",
        },
        executable="ray/core/raylet",
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    repacked = without_jars(source, out_dir)
    with zipfile.ZipFile(repacked) as wheel:
        names = wheel.namelist()
        assert "ray/jars/ray_dist.jar" not in names and "ray/__init__.py" in names
        assert (wheel.getinfo("ray/core/raylet").external_attr >> 16) & 0o111
        record = wheel.read("ray-2.60.0.dist-info/RECORD").decode()
        assert "ray/core/raylet,sha256=" in record and "jars" not in record


def test_parts_stay_under_the_limit_and_ray_never_rides_in_part_one(tmp_path):
    def sized(name: str, mib: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"\0" * int(mib * MIB))
        return path

    first = [
        sized("diffusers-1-py3-none-any.whl", 20),
        sized("transformers-1-py3-none-any.whl", 10),
    ]
    second = [
        sized("ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl", 45),
        sized("virtualenv-1-py3-none-any.whl", 8),
        sized("aiohttp-1-py3-none-any.whl", 25),
    ]
    parts = pack(first, second, 50 * MIB)
    assert all(sum(w.stat().st_size for w in part) <= 50 * MIB for part in parts)
    assert set(first) <= set(parts[0])
    assert "ray" not in {project_name(w) for w in parts[0]}
    assert sorted(w.name for part in parts for w in part) == sorted(w.name for w in first + second)


def test_the_overhead_tool_reads_process_cpu_and_measures_the_app_alone():
    from benchmarks.overhead import cpu_seconds

    assert cpu_seconds(os.getpid()) > 0
    assert cpu_seconds(2**22 + 12345) is None  # no such process
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", "--app-only", "--requests", "10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    per_request = float(done.stdout.split(" ms CPU per request")[0].split()[-1])
    assert per_request > 0


def test_a_burst_is_parsed_when_the_sweep_starts_and_a_bad_one_refused_there():
    args = parse_args(["--model", "sd-tiny", "--burst", "512x512:4", "64x64:8"])
    assert args.burst == {"512x512": 4, "64x64": 8}
    with pytest.raises(SystemExit):
        parse_args(["--model", "sd-tiny", "--burst", "512x512"])
