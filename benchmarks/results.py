"""The results file of one sweep: `<date>-<device>-<model>.json`, written after every row so
a run cut short still leaves what it measured."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.stats import Row

REPO = Path(__file__).resolve().parents[1]
# Written into each wheel part by benchmarks/gpu/prepare_wheels.py: the GPU machine's copy
# of the tree has no .git folder.
COMMIT_FILES = sorted((REPO / ".whl").glob("part*/commit.txt"))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def current_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        if head.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO,
                capture_output=True,
                text=True,
            ).stdout.strip()
            return head.stdout.strip() + ("-dirty" if dirty else "")
    except OSError:
        pass
    if COMMIT_FILES:
        return COMMIT_FILES[0].read_text().strip()
    return os.environ.get("BENCH_COMMIT", "unknown")


@dataclass
class Results:
    device: str  # short label in the file name: "cpu", "nvidia-h100-80gb-hbm3"
    model: str
    resolution: str
    steps: int
    commit: str
    date: str
    device_detail: str = ""
    family: str = ""
    dtype: str = ""
    guidance_scale: float = 0.0
    flops_per_image: int | None = None
    flops_by_module: dict[str, int] = field(default_factory=dict)
    peak_tflops: float | None = None
    peak_dtype: str | None = None
    notes: str = ""
    rows: list[Row] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return f"{self.date}-{slug(self.device)}-{slug(self.model)}"

    def add(self, row: Row) -> None:
        """Add a row (replacing an earlier one of the same setting) with its share of peak."""
        # A burst mixes sizes: the FLOPs of one image at the sweep's size do not apply.
        if self.flops_per_image and row.images_per_s and row.mode != "burst":
            row.tflops = round(row.images_per_s * self.flops_per_image / 1e12, 4)
            if self.peak_tflops:
                row.peak_fraction = round(row.tflops / self.peak_tflops, 5)
        self.rows = [r for r in self.rows if row_key(r) != row_key(row)] + [row]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = [row.to_json() for row in self.rows]
        return data

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.stem}.json"
        staging = path.with_suffix(".json.tmp")
        staging.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        staging.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())
        rows = [Row.from_json(row) for row in data.pop("rows")]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known}, rows=rows)


def row_key(row: Row) -> tuple:
    load = row.offered_rps if row.mode == "open" else row.concurrency
    return (row.system, row.mode, row.max_batch_size, load)


def save_table(folder: Path, stem: str, meta: dict[str, Any], rows: list, report: str) -> None:
    """A one-table benchmark's files: `<stem>.json` (meta and rows, dataclasses) and
    `<stem>.md` (the rendered table)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {**meta, "rows": [asdict(row) for row in rows]}
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    (folder / f"{stem}.md").write_text(report)
