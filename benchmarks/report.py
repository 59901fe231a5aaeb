"""Render a results file as a Markdown table (with each of our rows as a ratio to both
baselines) and PNG plots of throughput and p95 latency against concurrency.

    python -m benchmarks.report benchmarks/results/2026-11-21-cpu-sd-tiny.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from benchmarks.results import Results
from benchmarks.stats import Row

SERVE, LITSERVE, NAIVE, RAW = "serve", "litserve", "naive-server", "raw-diffusers"
SYSTEM_ORDER = {SERVE: 0, LITSERVE: 1, NAIVE: 2, RAW: 3}


def raw_match(results: Results, row: Row) -> Row | None:
    """The raw pipeline at the batch the service could form: min(concurrency, max batch)."""
    raws = [r for r in results.rows if r.system == RAW]
    # Under an open loop the arrival rate, not the pipeline, bounds throughput.
    if not raws or row.max_batch_size is None or row.mode != "closed":
        return None
    batch = min(row.concurrency, row.max_batch_size)
    fitting = [r for r in raws if (r.max_batch_size or 0) <= batch]
    return max(fitting, key=lambda r: r.max_batch_size or 0) if fitting else None


def same_load(results: Results, row: Row, system: str, **setting) -> Row | None:
    """`system`'s row under the same load as `row` (same concurrency, or same arrival
    rate), with the given settings (e.g. max_batch_size)."""
    for other in results.rows:
        if other.system != system or other.mode != row.mode:
            continue
        if any(getattr(other, name) != value for name, value in setting.items()):
            continue
        if row.mode == "open" and other.offered_rps == row.offered_rps:
            return other
        if row.mode != "open" and other.concurrency == row.concurrency:
            return other
    return None


def naive_match(results: Results, row: Row) -> Row | None:
    """The naive server under the same load."""
    return same_load(results, row, NAIVE)


def litserve_match(results: Results, row: Row) -> Row | None:
    """LitServe with the same max batch under the same load."""
    return same_load(results, row, LITSERVE, max_batch_size=row.max_batch_size)


def ratio(ours: float, theirs: float | None) -> str:
    if theirs is None or not theirs or math.isnan(ours) or math.isnan(theirs):
        return ""
    return f"{ours / theirs:.2f}"


def _ms(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.0f}"


def _batches(row: Row) -> str:
    return " ".join(f"{size}:{count}" for size, count in sorted(row.batch_images.items()))


def _sorted(rows: list[Row]) -> list[Row]:
    return sorted(
        rows,
        key=lambda r: (
            SYSTEM_ORDER.get(r.system, 9),
            r.max_batch_size or 0,
            r.offered_rps or 0,
            r.concurrency,
        ),
    )


def markdown(results: Results) -> str:
    flops = results.flops_per_image
    lines = [
        f"# {results.model} on {results.device}",
        "",
        f"- Device: {results.device_detail or results.device}",
        f"- Model: {results.model} ({results.family}), {results.dtype}, "
        f"{results.resolution}, {results.steps} steps, guidance {results.guidance_scale}",
        f"- Commit: `{results.commit}`, date {results.date}",
    ]
    if flops:
        lines.append(f"- Model FLOPs per image: {flops / 1e12:.4g} TFLOP (counted, one call)")
    if results.peak_tflops:
        lines.append(
            f"- Measured {results.peak_dtype} matmul peak: {results.peak_tflops:.4g} TFLOP/s"
        )
    if results.notes:
        lines.append(f"- Notes: {results.notes}")
    lines += [
        "",
        "Latency for `raw-diffusers` is one pipeline call of the whole batch. "
        "Ratios: images/s of the row over the raw pipeline at the batch it could form "
        "(min(concurrency, max batch)), and over the naive server at the same concurrency "
        "(or arrival rate), and over LitServe with the same max batch under the same load; "
        "`p95 / naive` is the p95 latency ratio (lower is better).",
        "",
    ]
    header = (
        "| system | mode | max batch | concurrency | offered req/s | requests | errors | "
        "images/s | QPS | p50 ms | p95 ms | p99 ms | batches formed (size:requests) | "
        "× raw img/s | × naive img/s | × LitServe img/s | p95 / naive |"
    )
    if flops:
        header += " TFLOP/s | % of peak |"
    lines += [header, _rule(header)]
    for row in _sorted(results.rows):
        raw = raw_match(results, row) if row.system == SERVE else None
        naive = naive_match(results, row) if row.system == SERVE else None
        peer = litserve_match(results, row) if row.system == SERVE else None
        cells = [
            row.system,
            row.mode,
            "" if row.max_batch_size is None else str(row.max_batch_size),
            str(row.concurrency),
            "" if row.offered_rps is None else f"{row.offered_rps:g}",
            str(row.requests),
            str(row.errors),
            f"{row.images_per_s:.3g}",
            f"{row.qps:.3g}",
            _ms(row.p50_ms),
            _ms(row.p95_ms),
            _ms(row.p99_ms),
            _batches(row),
            ratio(row.images_per_s, raw.images_per_s if raw else None),
            ratio(row.images_per_s, naive.images_per_s if naive else None),
            ratio(row.images_per_s, peer.images_per_s if peer else None),
            ratio(row.p95_ms, naive.p95_ms if naive else None),
        ]
        if flops:
            cells.append("" if row.tflops is None else f"{row.tflops:.3g}")
            fraction = row.peak_fraction
            cells.append("" if fraction is None else f"{100 * fraction:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    bursts = [r for r in _sorted(results.rows) if r.batches_by_size]
    if bursts:
        lines += [
            "",
            "Mixed-size bursts (every request sent at once): the pipeline calls each "
            "request size was cut into, as call size in images : requests.",
            "",
            "| system | max batch | request size | requests | calls formed |",
            "|---|---|---|---|---|",
        ]
        for row in bursts:
            for size, counts in (row.batches_by_size or {}).items():
                formed = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
                lines.append(
                    f"| {row.system} | {row.max_batch_size} | {size} | "
                    f"{sum(counts.values())} | {formed} |"
                )
    return "\n".join(lines) + "\n"


def _rule(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def plot(results: Results, folder: Path) -> list[Path]:
    """Two PNGs: images/s and p95 latency against concurrency, one line per system setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed = [r for r in results.rows if r.mode == "closed"]
    raws = sorted((r for r in results.rows if r.system == RAW), key=lambda r: r.max_batch_size)
    series: dict[str, list[Row]] = {}
    for row in _sorted(closed):
        label = (
            row.system if row.system == NAIVE else f"{row.system} max batch {row.max_batch_size}"
        )
        series.setdefault(label, []).append(row)
    paths = []
    for metric, title, ylabel, suffix in (
        ("images_per_s", "Throughput", "images/s", "throughput"),
        ("p95_ms", "p95 latency", "p95 latency (ms)", "p95"),
    ):
        figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
        for label, rows in series.items():
            rows = sorted(rows, key=lambda r: r.concurrency)
            axes.plot(
                [r.concurrency for r in rows], [getattr(r, metric) for r in rows], "o-", label=label
            )
        if raws:
            # The raw pipeline has no concurrency: its batch of b images stands at x = b.
            axes.plot(
                [r.max_batch_size for r in raws],
                [getattr(r, metric) for r in raws],
                "k--s",
                label="raw diffusers (x = batch size)",
            )
        axes.set_xscale("log", base=2)
        ticks = sorted({r.concurrency for r in closed} | {r.max_batch_size for r in raws})
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.minorticks_off()
        axes.set_xlabel("concurrency (closed loop)")
        axes.set_ylabel(ylabel)
        axes.set_title(f"{title}: {results.model}, {results.resolution}, {results.device}")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = folder / f"{results.stem}-{suffix}.png"
        figure.savefig(path)
        plt.close(figure)
        paths.append(path)
    return paths


def write_reports(results: Results, folder: Path) -> list[Path]:
    """JSON, Markdown and both plots, side by side in `folder`."""
    json_path = results.save(folder)
    md_path = folder / f"{results.stem}.md"
    md_path.write_text(markdown(results))
    return [json_path, md_path, *plot(results, folder)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    for path in args.results:
        for written in write_reports(Results.load(path), path.parent):
            print(written)


if __name__ == "__main__":
    main()
