"""The reliability campaign's figures become the README's table, in the order they ran."""

from __future__ import annotations

import json

from tests.reliability import figures


def test_the_table_keeps_run_order_and_flattens_figures():
    document = {
        "form": "short",
        "commit": "abc1234",
        "date": "2026-12-04",
        "scenarios": {
            "soak": {"statuses": {"200": 3, "503": 1}, "p99_admitted_s": 1.234},
            "a kill": {"attempts": [1, 2]},
        },
    }
    text = figures.table(document)
    assert "commit abc1234, 2026-12-04" in text and "RELIABILITY_LONG=0" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [
        "| soak | statuses: 200 3, 503 1; p99_admitted_s: 1.23 |",
        "| a kill | attempts: [1, 2] |",
    ]


def test_the_readme_holds_the_committed_figures():
    readme = figures.README.read_text()
    assert readme.count(figures.START) == 1 and readme.count(figures.END) == 1
    committed = json.loads((figures.REPO / "benchmarks/results/reliability.json").read_text())
    between = readme.split(figures.START)[1].split(figures.END)[0]
    assert between.strip() == figures.table(committed)
