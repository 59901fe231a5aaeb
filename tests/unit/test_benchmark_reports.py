"""Results files, the Markdown table's ratios, and the plots."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks.report import litserve_match, markdown, naive_match, raw_match, write_reports
from benchmarks.results import Results
from benchmarks.stats import Row, measured_row

SCHEMA = {"device", "model", "resolution", "steps", "commit", "rows"}
ROW_SCHEMA = {"system", "concurrency", "max_batch_size", "requests", "images_per_s", "qps"}
ROW_SCHEMA |= {"p50_ms", "p95_ms", "p99_ms", "errors"}


def row(system, concurrency, max_batch_size, images_per_s, p95_ms=100.0, mode="closed", rps=None):
    return Row(
        system=system,
        mode=mode,
        concurrency=concurrency,
        max_batch_size=max_batch_size,
        requests=8,
        errors=0,
        seconds=1.0,
        qps=images_per_s,
        images_per_s=images_per_s,
        p50_ms=p95_ms / 2,
        p95_ms=p95_ms,
        p99_ms=p95_ms,
        batch_images={max_batch_size or 1: 8},
        offered_rps=rps,
    )


def sample() -> Results:
    results = Results(
        device="cpu", model="sd-tiny", resolution="64x64", steps=2, commit="abc", date="2026-01-02"
    )
    results.flops_per_image = 2_000_000_000_000  # 2 TFLOP per image
    results.peak_tflops = 10.0
    for r in (
        row("raw-diffusers", 1, 1, 4.0, mode="in-process"),
        row("raw-diffusers", 1, 4, 8.0, mode="in-process"),
        row("naive-server", 4, None, 2.0, p95_ms=400.0),
        row("serve", 4, 4, 6.0, p95_ms=200.0),
        row("serve", 2, 4, 5.0),
        row("serve", 4, 4, 6.0, p95_ms=200.0, mode="open", rps=3.0),
        row("naive-server", 4, None, 2.5, p95_ms=800.0, mode="open", rps=3.0),
        row("litserve", 4, 4, 4.0, p95_ms=300.0),
        row("litserve", 4, 2, 5.0),  # another max batch: not the peer of serve b=4
    ):
        results.add(r)
    return results


def test_rows_carry_their_share_of_the_peak_and_replace_same_setting():
    results = sample()
    serve = next(r for r in results.rows if r.system == "serve" and r.concurrency == 4)
    assert serve.tflops == 12.0 and serve.peak_fraction == 1.2
    before = len(results.rows)
    results.add(row("serve", 4, 4, 7.0))
    assert len(results.rows) == before
    assert [r.images_per_s for r in results.rows if r.system == "serve"][-1] == 7.0


def test_ratios_match_the_batch_formed_and_the_same_load():
    results = sample()
    serve4 = next(r for r in results.rows if (r.system, r.concurrency) == ("serve", 4))
    serve2 = next(r for r in results.rows if (r.system, r.concurrency) == ("serve", 2))
    assert raw_match(results, serve4).max_batch_size == 4
    # Concurrency 2 forms batches of at most 2: no raw batch of 2, so the largest below.
    assert raw_match(results, serve2).max_batch_size == 1
    assert naive_match(results, serve4).images_per_s == 2.0
    assert naive_match(results, serve2) is None
    open_row = next(r for r in results.rows if r.system == "serve" and r.mode == "open")
    assert naive_match(results, open_row).p95_ms == 800.0
    assert raw_match(results, open_row) is None
    assert litserve_match(results, serve4).images_per_s == 4.0
    assert litserve_match(results, serve2) is None and litserve_match(results, open_row) is None
    table = markdown(results)
    # serve c=4: 6/8 of raw, 6/2 of naive, 6/4 of LitServe, p95 200/400.
    assert "| 0.75 | 3.00 | 1.50 | 0.50 |" in table
    # The open-loop row: no raw ratio, 6/2.5 of naive at the same rate, p95 200/800.
    assert "|  | 2.40 |  | 0.25 |" in table
    assert "2 TFLOP" in table


def test_json_markdown_and_plots_are_written(tmp_path):
    results = sample()
    paths = write_reports(results, tmp_path)
    assert [p.name for p in paths] == [
        "2026-01-02-cpu-sd-tiny.json",
        "2026-01-02-cpu-sd-tiny.md",
        "2026-01-02-cpu-sd-tiny-throughput.png",
        "2026-01-02-cpu-sd-tiny-p95.png",
    ]
    data = json.loads(paths[0].read_text())
    assert set(data) >= SCHEMA
    assert all(set(r) >= ROW_SCHEMA for r in data["rows"])
    assert Results.load(paths[0]).rows == results.rows
    for png in paths[2:]:
        with Image.open(png) as image:
            image.verify()
            assert image.format == "PNG"


def test_percentiles_of_a_measured_row():
    measured = measured_row(
        system="serve",
        mode="closed",
        concurrency=2,
        max_batch_size=2,
        requests=5,
        errors=1,
        seconds=2.0,
        images=4,
        latencies_ms=[10.0, 20.0, 30.0, 40.0],
    )
    assert (measured.qps, measured.images_per_s) == (2.0, 2.0)
    assert measured.p50_ms == 25.0 and measured.p50_ms <= measured.p95_ms <= measured.p99_ms <= 40


def test_a_burst_row_lists_the_calls_each_size_was_cut_into(tmp_path):
    results = sample()
    burst = row("serve", 12, 8, 3.0, mode="burst")
    burst.batches_by_size = {"512x512": {2: 4}, "256x256": {7: 7, 1: 1}}
    results.add(burst)
    assert burst.tflops is None  # mixed sizes: one size's FLOPs do not apply
    again = Results.load(results.save(tmp_path))
    kept = next(r for r in again.rows if r.mode == "burst")
    assert kept.batches_by_size == {"512x512": {2: 4}, "256x256": {1: 1, 7: 7}}
    table = markdown(results)
    assert "| serve | 8 | 512x512 | 4 | 2:4 |" in table
    assert "| serve | 8 | 256x256 | 8 | 1:1 7:7 |" in table


def test_preview_benchmark_settings_and_report():
    from benchmarks.previews import PreviewRow, decoder_setting, markdown

    assert decoder_setting("vae:0.5").model_dump() == {"scale": 0.5, "decoder": None}
    assert decoder_setting("tiny:1").model_dump() == {"scale": 1.0, "decoder": "tiny"}
    with pytest.raises(SystemExit):
        decoder_setting("taesd:0.5")
    meta = {
        "model": "sd-tiny",
        "family": "stable-diffusion",
        "device_detail": "cpu",
        "size": "256x256",
        "steps": 8,
        "partials": 3,
        "repeats": 5,
        "commit": "abc",
        "full_decode_ms_median": 25.0,
    }
    row = PreviewRow("vae:0.5", 3, 18.0, 340.0, 320.0, 1.063, 0.72)
    report = markdown(meta, [row])
    assert "| vae:0.5 | 3 | 18.0 | 0.72 | 340.0 / 320.0 | 1.063 |" in report
    assert "ms per preview (decode + encode)" in report


def test_chat_benchmark_report_compares_tokens_per_second_with_raw_generate():
    from benchmarks.chat import ChatRow, markdown, row

    raw = row("raw-generate", 4, 2.0, 100, [0.1] * 8, [0.5] * 8)
    assert (raw.requests, raw.requests_per_s, raw.tokens_per_s) == (8, 4.0, 50.0)
    served = ChatRow("serve", 4, 8, 4.0, 2.0, 25.0, 100, 120.0, 150.0, 1900.0, 2100.0)
    meta = {"model": "glm-4.6v-tiny", "device_detail": "cpu", "requests": 8, "max_tokens": 32}
    report = markdown({**meta, "commit": "abc"}, [raw, served])
    assert "| serve | 4 | 2.0 | 25.0 | 120.0 / 150.0 | 1900.0 / 2100.0 | 0.50 |" in report
    assert "| raw-generate | 4 | 4.0 | 50.0 | 100.0 / 100.0 | 500.0 / 500.0 | 1.00 |" in report
