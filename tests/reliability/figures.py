"""The campaign's figures: each scenario records one row, printed as it ends and, when
RELIABILITY_REPORT names a file, written there as JSON (`make test-reliability` does, and
`python -m tests.reliability.figures` turns it into the README's table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"
# Short in CI (every scenario still runs and asserts), long on demand.
LONG = os.environ.get("RELIABILITY_LONG") == "1"


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True)
    return head.stdout.decode().strip() or "unknown"


class Figures:
    def __init__(self, path: Path | None):
        self.path = path
        self.rows: dict[str, dict] = {}

    def record(self, scenario: str, **figures) -> None:
        self.rows[scenario] = figures
        print(f"\nRELIABILITY {scenario}: " + json.dumps(figures, sort_keys=True), flush=True)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            document = {
                "form": "long" if LONG else "short",
                "commit": commit(),
                "date": time.strftime("%Y-%m-%d"),
                "scenarios": self.rows,  # in the order they ran
            }
            self.path.write_text(json.dumps(document, indent=2) + "\n")


def cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table(document: dict) -> str:
    lines = [
        f"Form: {document['form']} (`make test-reliability`"
        + (")" if document["form"] == "long" else ", RELIABILITY_LONG=0)")
        + f", commit {document.get('commit', '?')}, {document.get('date', '?')}; 2-core CPU,"
        " tiny random-weight sd-tiny at 64x64, 2 steps.",
        "",
        "| scenario | figures |",
        "|---|---|",
    ]
    for scenario, figures in document["scenarios"].items():
        lines.append(
            f"| {scenario} | " + "; ".join(f"{k}: {cell(v)}" for k, v in figures.items()) + " |"
        )
    return "\n".join(lines)


def update_readme(report: Path) -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = table(json.loads(report.read_text()))
    README.write_text(f"{head}{START}\n{body}\n{END}{tail}")


if __name__ == "__main__":
    update_readme(Path(sys.argv[1]))
