"""The job and key stores on a real PostgreSQL that goes out of reach (a TCP gate in
front of it, shut) and comes back: callers get 503 database_unavailable with Retry-After
in the envelope, never a 500 or a 401 for a key that could not be looked up, and the
service answers again once the database is back, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from serve_app.config import AppConfig, JobsConfig
from serve_app.db import open_engine
from serve_app.jobs.records import JobRecord
from serve_app.jobs.runner import JobRunner
from serve_app.jobs.store import JobStore
from serve_app.observability.metrics import DEPENDENCY_FAILURES, InMemorySink, ServiceMetrics
from serve_app.security.key_store import KeyStore
from serve_app.security.keys import KeyHasher
from tests.databases import postgres_schema_url
from tests.helpers import assert_error, in_process_app, local_args
from tests.integration.jobs_helpers import wait_until
from tests.tcp_gate import TcpGate
from tests.unit.test_job_store import make_jobs

PEPPER = "outage-test-pepper-0123456789abcdef"
JOB = {"type": "image_generation", "request": {"model": "sd-tiny", "prompt": "a mug"}}


@pytest.fixture
def gated_url() -> Iterator[tuple[str, TcpGate]]:
    """A fresh schema on the test PostgreSQL, reached through a gate."""
    with postgres_schema_url() as url:
        parsed = make_url(url)
        gate = TcpGate(parsed.port or 5432).open()
        try:
            yield parsed.set(host="127.0.0.1", port=gate.port).render_as_string(False), gate
        finally:
            gate.shut()


async def test_a_database_out_of_reach_is_a_503_to_retry_and_its_return_heals(
    gated_url, tmp_path: Path, monkeypatch
):
    url, gate = gated_url
    monkeypatch.setenv("IMAGE_SERVICE_KEY_PEPPER", PEPPER)
    keys = KeyStore.open(url, KeyHasher(PEPPER.encode()))
    cached = keys.create_key("acme", "crm", ["generate", "jobs"]).key
    uncached = keys.create_key("acme", "cms", ["generate", "jobs"]).key
    args = local_args(
        auth={"enabled": True, "database_url": url, "cache_ttl_s": 300},
        rate_limits={"enabled": False},
        storage={"root": str(tmp_path / "images")},
        jobs={"store_url": url},
    )
    sink = InMemorySink()
    app = in_process_app(AppConfig.model_validate(args), metrics=ServiceMetrics(sink))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        before = await http.post("/v1/jobs", json=JOB, headers=bearer(cached))
        assert before.status_code == 202, before.text

        gate.shut()
        submitted = await http.post("/v1/jobs", json=JOB, headers=bearer(cached))
        listed = await http.get("/v1/jobs", headers=bearer(cached))
        unknown_key = await http.get("/v1/jobs", headers=bearer(uncached))
        ready = await http.get("/v1/health/ready")
        gate.open()
        after = await http.post("/v1/jobs", json=JOB, headers=bearer(cached))
        again = await http.get("/v1/jobs", headers=bearer(uncached))

    for answer in (submitted, listed, unknown_key):
        error = assert_error(answer, 503, "database_unavailable")
        assert answer.headers["retry-after"] == "1"
        # Nothing about where the database is.
        assert str(gate.port) not in error["message"] and "127.0.0.1" not in error["message"]
    assert ready.status_code == 503
    # The key it could not look up is counted for ops (the job calls are request errors).
    assert sink.values(DEPENDENCY_FAILURES, dependency="key_store") == [1]
    assert after.status_code == 202, after.text
    assert again.status_code == 200, again.text
    ids = [job["id"] for job in again.json()["data"]]
    assert sorted(ids) == sorted([before.json()["id"], after.json()["id"]])
    keys.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_failed_statement_never_shows_its_values(backend, tmp_path: Path):
    """What gets logged of a database error (the runner logs them whole) holds the
    statement, never the values bound to it: prompts, results, key digests."""
    secret = "a prompt nobody else may read"
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'values.sqlite3'}"
        else:
            url = stack.enter_context(postgres_schema_url())
        engine = open_engine(url)
        stack.callback(engine.dispose)
        with pytest.raises(DBAPIError) as failure, engine.begin() as connection:
            insert = text("INSERT INTO no_such_table (prompt) VALUES (:p)")
            connection.execute(insert, {"p": secret})
    assert "no_such_table" in str(failure.value) and secret not in str(failure.value)


class HeldExecutor:
    """Makes a job's (empty) result when the test lets it."""

    def __init__(self):
        self.release = asyncio.Event()

    async def execute(self, job: JobRecord) -> dict[str, Any]:
        await self.release.wait()
        return {"images": [], "steps": 1}

    def discard(self, result: dict[str, Any]) -> None:
        pass


@pytest.fixture
def gated_store(gated_url) -> Iterator[tuple[JobStore, TcpGate]]:
    url, gate = gated_url
    store = JobStore(url)
    store.create_schema()
    yield store, gate
    store.dispose()


async def test_a_job_that_ends_while_the_store_is_away_is_recorded_when_it_is_back(
    gated_store,
):
    """The work is done while the store is out of reach: the runner keeps the result and
    writes the job's end once the store answers, instead of leaving the job to be swept
    and run again."""
    store, gate = gated_store
    store.create_jobs(make_jobs(1), max_attempts=3)
    (job,) = store.claim_jobs("w1", limit=1, lease_s=60)
    executor = HeldExecutor()
    runner = JobRunner(store, executor, JobsConfig(lease_s=60), worker_id="w1")
    running = asyncio.create_task(runner._run_job(job))
    gate.shut()
    executor.release.set()
    await asyncio.sleep(1.5)  # the runner has met the outage (its first retry is at 0.5 s)
    assert not running.done()
    gate.open()
    await asyncio.wait_for(running, 60)
    ended = store.get_job(job.id)
    assert (ended.status, ended.attempts) == ("succeeded", 1)


async def test_a_runner_that_lost_the_store_sweeps_no_lease_until_one_has_passed(gated_store):
    """Every live worker's heartbeats fail while the store is away, so leases look expired
    when it is back: a runner that saw the outage waits a lease before sweeping, and then
    sweeps what is still expired (a dead worker's job)."""
    store, gate = gated_store
    store.create_jobs(make_jobs(1), max_attempts=3)
    (job,) = store.claim_jobs("w-dead", limit=1, lease_s=1)
    await asyncio.sleep(1.2)  # its lease has run out
    config = JobsConfig(lease_s=30, sweep_interval_s=0.05, poll_interval_s=0.05)
    runner = JobRunner(store, HeldExecutor(), config, worker_id="w1")
    gate.shut()
    loop = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(0.5)  # claims failing
        gate.open()
        await asyncio.sleep(1.0)  # many rounds of the loop, all within the lease
        assert store.get_job(job.id).lease_token == job.lease_token  # not swept
        runner._store_failed_at -= config.lease_s  # as a lease later
        swept = await asyncio.to_thread(
            wait_until, lambda: store.get_job(job.id).lease_token != job.lease_token, 30
        )
        assert swept
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
