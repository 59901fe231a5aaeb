"""No accepted job is lost: kill the JobRunner replica, and separately the whole
application (its Ray instance, every process of it), while jobs run and wait; after the
restart every job ends succeeded with its images, each made and announced once."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import postgres_schema_url
from tests.helpers import REPO, free_port
from tests.integration.conftest import SERVICE_ENVIRONMENT
from tests.integration.jobs_helpers import (
    BackgroundLoop,
    generation_job,
    verified_events,
    wait_for_job,
    wait_until,
)
from tests.integration.processes import kill_session

pytestmark = pytest.mark.integration

# Heavy enough (seconds a batch on a CPU) that jobs are still running when the kill comes.
SLOW_JOB = {"size": "256x256", "steps": 20, "n": 2}


def submit_slow_jobs(client: httpx.Client, count: int, callback_url: str, tag: str) -> list[str]:
    return [
        client.post(
            "/v1/jobs",
            json={**generation_job(f"{tag} {i}", **SLOW_JOB), "callback_url": callback_url},
        ).json()["id"]
        for i in range(count)
    ]


def wait_until_one_runs(client: httpx.Client, job_ids: list[str]) -> None:
    wait_until(
        lambda: any(client.get(f"/v1/jobs/{j}").json()["status"] == "running" for j in job_ids),
        timeout_s=60,
        what="a job running",
    )


def assert_each_done_once(client, job_ids, storage_root: Path, receiver) -> list[dict]:
    jobs = [wait_for_job(client, job_id, timeout_s=240) for job_id in job_ids]
    for job in jobs:
        assert job["status"] == "succeeded", job
        assert len(job["result"]["images"]) == SLOW_JOB["n"]
        files = sorted(p.name for p in (storage_root / "jobs" / job["id"]).iterdir())
        assert files == ["0.png", "1.png"]
    wait_until(
        lambda: all(
            client.get(f"/v1/jobs/{j}").json()["webhook"]["status"] == "delivered" for j in job_ids
        ),
        what="every job's webhook delivered",
    )
    events = [e for e in verified_events(receiver.received("/ok")) if e["data"]["id"] in job_ids]
    # One event per job, whatever was retried: no job announced twice.
    assert sorted(e["data"]["id"] for e in events) == sorted(job_ids)
    assert {e["type"] for e in events} == {"job.succeeded"}
    return jobs


def test_killing_the_job_runner_replica_loses_no_job(client, app_args, webhook_receiver):
    import ray

    job_ids = submit_slow_jobs(client, 6, webhook_receiver.url("/ok"), "runner kill")
    wait_until_one_runs(client, job_ids)
    (runner,) = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if "images#JobRunner#" in actor["name"]
    ]
    ray.kill(ray.get_actor(runner["name"], namespace=runner["namespace"]), no_restart=True)

    jobs = assert_each_done_once(
        client, job_ids, Path(app_args["storage"]["root"]), webhook_receiver
    )
    # The jobs it held went back to the queue after their lease ran out, and ran again.
    assert any(job["attempts"] >= 2 for job in jobs)


def test_killing_the_model_replica_spends_no_attempt(client, app_args, webhook_receiver):
    """A replica lost under a job (its node died, it was restarted) is not the job's
    fault: the job runs again without spending one of its attempts."""
    import ray

    from serve_app.jobs.store import JobStore

    job_ids = submit_slow_jobs(client, 4, webhook_receiver.url("/ok"), "replica kill")
    wait_until_one_runs(client, job_ids)
    time.sleep(1)  # into the pipeline call
    (replica,) = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if "images#sd-tiny#" in actor["name"]
    ]
    with ReadinessWatch(client) as readiness:
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
        jobs = assert_each_done_once(
            client, job_ids, Path(app_args["storage"]["root"]), webhook_receiver
        )
        wait_until(lambda: readiness.seen[-1:] == [(200, "ok", 1)], what="sd-tiny back")
    # While the only sd-tiny replica was gone readiness said degraded, naming it: the
    # other models served on, so a load balancer must keep the Gateway.
    assert (200, "degraded", 0) in readiness.seen
    store = JobStore(app_args["jobs"]["store_url"])
    try:
        lost = [j for j in job_ids if store.requeues_for(j, "replica_unavailable")]
    finally:
        store.dispose()
    assert lost, "no job was running on the killed replica"
    assert [job["attempts"] for job in jobs] == [1] * len(jobs)


class ReadinessWatch(BackgroundLoop):
    """Polls /v1/health/ready: (status code, status, sd-tiny's running replicas) for each
    answer, in order."""

    def __init__(self, client: httpx.Client):
        super().__init__()
        self.url = str(client.base_url.join("/v1/health/ready"))
        self.seen: list[tuple[int, str, int | None]] = []

    def step(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(self.url, timeout=10)
            body = answer.json()
            sd = (body.get("deployments") or {}).get("sd-tiny", {}).get("running")
            self.seen.append((answer.status_code, body["status"], sd))
        self.pause(0.2)


class AppProcess:
    """The application in its own Ray instance; `kill()` takes every process of it down."""

    def __init__(self, args_file: Path, port: int, log: Path):
        self.port = port
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.app_process", str(args_file), str(port)],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **SERVICE_ENVIRONMENT},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = 180) -> None:
        def healthy():
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout_s=timeout_s, what="the application healthy")

    def kill(self) -> None:
        """SIGKILL to every process in its session: driver, GCS, raylet, every replica."""
        kill_session(self.process)


@pytest.fixture
def crash_app_args(app_args, tmp_path) -> Iterator[dict]:
    """One model, its own images folder, and the job store on PostgreSQL (the shared app
    uses SQLite), so that both stores are crashed end to end."""
    args = copy.deepcopy(app_args)
    args["models"] = [m for m in args["models"] if m["name"] == "sd-tiny"]
    args["storage"] = {**args["storage"], "root": str(tmp_path / "images")}
    with postgres_schema_url() as store_url:
        args["jobs"] = {**args["jobs"], "store_url": store_url}
        yield args


def test_killing_the_whole_application_loses_no_job(crash_app_args, tmp_path, webhook_receiver):
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(crash_app_args))
    first = AppProcess(args_file, free_port(), tmp_path / "app.log")
    second = None
    try:
        first.wait_healthy()
        with httpx.Client(base_url=first.url, timeout=60) as client:
            job_ids = submit_slow_jobs(client, 6, webhook_receiver.url("/ok"), "app kill")
            wait_until_one_runs(client, job_ids)
        first.kill()

        second = AppProcess(args_file, free_port(), tmp_path / "app.log")
        second.wait_healthy()
        with httpx.Client(base_url=second.url, timeout=60) as client:
            jobs = assert_each_done_once(client, job_ids, tmp_path / "images", webhook_receiver)
        assert any(job["attempts"] >= 2 for job in jobs)
    finally:
        for app in (first, second):
            if app is not None and app.process.poll() is None:
                app.kill()
