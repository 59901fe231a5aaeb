"""The load generator runs against the real service (no timing assertions)."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.load import run_closed_loop

pytestmark = pytest.mark.integration


def test_closed_loop_counts_requests_and_batches(base_url):
    result = asyncio.run(
        run_closed_loop(base_url, "sd-tiny", concurrency=4, requests=8, size="64x64", steps=2)
    )
    assert result.errors == 0
    assert sum(result.batch_images.values()) == 8
    assert result.images_per_s > 0 and result.p50_ms <= result.p99_ms
    assert max(result.batch_images) > 1  # concurrent requests met in a batch
