"""Prepare the wheels the GPU machine lacks, in parts that each travel in one device call.

The GPU machine has Python 3.12 and torch but neither Ray nor diffusers, and no network;
wheels travel with a call as an ignored, carried folder, at most 64 MiB per call with the
working tree. Ray's wheel (79 MB) loses `ray/jars` (Java workers only), and the rest is
packed so that part 1 holds what the raw and naive baselines need (no Ray) and part 2
holds Ray. The machine keeps ignored files between calls while it stays warm (30 s).

    python benchmarks/gpu/prepare_wheels.py        # writes .whl/part1, .whl/part2

Each part carries MANIFEST (every wheel of every part, so the device can tell a part is
missing) and commit.txt (the device's copy of the tree has no .git).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The device's Python 3.12.3 is Ubuntu 24.04's (glibc 2.39); pip matches each tag exactly.
PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64"]
PLATFORMS += ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64"]
PLATFORMS += ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
# What the raw diffusers, naive-server and LitServe baselines import: these go in part 1.
BASELINE_REQUIREMENTS = [
    "diffusers==0.42.1",
    "transformers==5.23.0",
    "fastapi>=0.115",
    "uvicorn>=0.30",
    "python-multipart>=0.0.20",
    "pydantic>=2.8",
    "httpx>=0.27",
    "pyyaml>=6",
    "safetensors>=0.4",
    "tqdm>=4.66",
    "litserve==0.2.19",
]
# In the device image already (device KINDS.md, 2026-11-17), large, and compiled against
# its torch stack: carrying our own copies would cost room and risk mismatches.
DEVICE_PROVIDED = {"numpy", "pillow", "grpcio", "hf-xet", "uvloop", "torch", "triton"}
DEVICE_PROVIDED |= {"accelerate", "psutil", "colorama"}
# Generated gRPC code refuses to import under an older grpcio than it was made with, and
# the device's grpcio is 1.84.0 (seen on the H200 machine, 2026-12-04).
DEVICE_PINS = ["grpcio-reflection==1.84.0"]
# Imported only when a config names S3 or PostgreSQL, which the GPU config does not.
NOT_AT_START = {"boto3", "psycopg"}


def normalized(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalized(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])


def serve_requirements() -> list[str]:
    """The project's own runtime dependencies (pyproject.toml), less what the device has
    and what the service imports only for a store the GPU config does not use."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    skip = DEVICE_PROVIDED | NOT_AT_START
    wanted = [r for r in project["dependencies"] if requirement_name(r) not in skip]
    return wanted + DEVICE_PINS


MIB = 1 << 20


def project_name(wheel: Path) -> str:
    return normalized(wheel.name.split("-")[0])


def download(requirements: list[str], folder: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + requirements, check=True)


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def without_jars(wheel: Path, target: Path) -> Path:
    """Repack a Ray wheel without ray/jars, keeping file modes (the raylet binaries are
    executables) and a RECORD that matches what is left."""
    out = target / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dest:
        record_name = next(n for n in source.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in source.infolist():
            if info.filename.startswith("ray/jars/") or info.filename == record_name:
                continue
            data = source.read(info)
            dest.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            if not info.is_dir():
                lines.append(record_line(info.filename, data))
        lines.append(f"{record_name},,")
        dest.writestr(record_name, "\n".join(lines) + "\n")
    return out


def pack(first: list[Path], second: list[Path], limit: int) -> list[list[Path]]:
    """Part 1 takes `first` (the baselines' wheels) and then whatever else fits, largest
    first; part 2 takes the rest. A third part appears only if two cannot hold it all."""
    parts: list[list[Path]] = [list(first)]
    sizes = [sum(w.stat().st_size for w in first)]
    if sizes[0] > limit:
        raise SystemExit(f"the baseline wheels alone are {sizes[0] / MIB:.1f} MiB")
    for wheel in sorted(second, key=lambda w: w.stat().st_size, reverse=True):
        size = wheel.stat().st_size
        if size > limit:
            raise SystemExit(f"{wheel.name} ({size / MIB:.1f} MiB) is over the part limit")
        # Ray itself never goes in part 1: part 1 must be worth a call without Ray.
        start = 1 if project_name(wheel) == "ray" else 0
        for index in range(start, len(parts) + 1):
            if index == len(parts):
                parts.append([])
                sizes.append(0)
            if sizes[index] + size <= limit:
                parts[index].append(wheel)
                sizes[index] += size
                break
    return parts


def tree_bytes() -> int:
    """What travels besides the carried parts: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((REPO / name.decode()).stat().st_size for name in listed if name)


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True)
    return head.stdout.decode().strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / ".whl")
    parser.add_argument("--limit-mib", type=float, default=64, help="per device call")
    args = parser.parse_args()
    limit = int(args.limit_mib * MIB) - tree_bytes() - MIB  # a MiB of slack for the tree

    cache = args.out / "download"
    baseline_dir, serve_dir = cache / "baseline", cache / "serve"
    for folder in (baseline_dir, serve_dir):
        shutil.rmtree(folder, ignore_errors=True)  # a wheel left by an older pin would ride too
        folder.mkdir(parents=True)
    download(BASELINE_REQUIREMENTS, baseline_dir)
    download(serve_requirements(), serve_dir)

    def carried(folder: Path) -> list[Path]:
        return [w for w in sorted(folder.glob("*.whl")) if project_name(w) not in DEVICE_PROVIDED]

    first = carried(baseline_dir)
    have = {project_name(w) for w in first}
    repacked = cache / "repacked"
    repacked.mkdir(exist_ok=True)
    second = []
    for wheel in carried(serve_dir):
        if project_name(wheel) in have:
            continue  # the same requirement resolved for part 1 already
        second.append(without_jars(wheel, repacked) if project_name(wheel) == "ray" else wheel)

    parts = pack(first, second, limit)
    names = [project_name(w) for part in parts for w in part]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise SystemExit(f"two versions of {twice}: pip on the device would refuse them all")
    manifest = "\n".join(sorted(w.name for part in parts for w in part)) + "\n"
    for old in args.out.glob("part*"):
        shutil.rmtree(old)
    for number, wheels in enumerate(parts, start=1):
        folder = args.out / f"part{number}"
        folder.mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, folder / wheel.name)
        (folder / "MANIFEST").write_text(manifest)
        (folder / "commit.txt").write_text(commit() + "\n")
        size = sum(w.stat().st_size for w in wheels)
        print(f"{folder}: {len(wheels)} wheels, {size / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
