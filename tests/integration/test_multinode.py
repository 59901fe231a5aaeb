"""Two Ray nodes on this machine, set up the way the README's deploy checklist says (one
token for the cluster, `ray start` per node with the secrets in its environment, `serve
deploy` and `serve status` through the head's dashboard, keys made with the key CLI), with
production's parts on: jobs and keys on PostgreSQL, Redis rate limits, S3 results (moto),
signed webhooks, two of every deployment at most one per node. Then the worker node dies
(every process of it, SIGKILL) while jobs and requests run.

It prints a figure line (`multinode: ...`) for the README's "when a node dies".
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.databases import postgres_schema_url
from tests.helpers import free_port, local_serve_config, scratch_args
from tests.integration.cluster import BIN, RayNode, dashboard_up, run
from tests.integration.conftest import SERVICE_ENVIRONMENT
from tests.integration.jobs_helpers import (
    BackgroundLoop,
    generation_job,
    verified_events,
    wait_for_job,
    wait_until,
)
from tests.security_fixtures import REDIS_URL, fresh_redis_prefix

pytestmark = pytest.mark.integration

PEPPER = "multinode-pepper-" + secrets.token_hex(16)
# Heavy enough that jobs are still running when the node dies.
JOB = {"size": "128x128", "steps": 12, "n": 1}
SYNC = {"model": "sd-tiny", "prompt": "a lamp", "size": "64x64", "steps": 2}
SPREAD = {"num_replicas": 2, "max_replicas_per_node": 1}
# Deployments the config spreads one replica per node (SPREAD).
ONE_PER_NODE = ("Gateway", "PromptTemplater", "JobRunner", "sd-tiny")


def cluster_environment(job_store_url: str, key_store_url: str) -> dict[str, str]:
    """What every node (and every command run against the cluster) has: the cluster's
    token and the service's secrets, as the checklist sets them."""
    return {
        **os.environ,
        **SERVICE_ENVIRONMENT,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "IMAGE_SERVICE_KEY_PEPPER": PEPPER,
        "IMAGE_SERVICE_JOB_STORE_URL": job_store_url,
        "IMAGE_SERVICE_KEY_DATABASE_URL": key_store_url,
        "RAY_worker_niceness": "0",
    }


def serve_config(args: dict, port: int) -> dict:
    config = local_serve_config()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    application = config["applications"][0]
    application["args"] = args
    application["deployments"] = [
        {"name": name, **SPREAD, "ray_actor_options": {"num_cpus": 0.1}}
        for name in ("Gateway", "PromptTemplater", "JobRunner")
    ] + [
        {
            "name": "sd-tiny",
            **SPREAD,
            "max_ongoing_requests": 16,
            "ray_actor_options": {"num_cpus": 0.2},
        }
    ]
    return config


@pytest.fixture
def cluster(
    tmp_path, tiny_cache, s3_server, s3_bucket, webhook_receiver
) -> Iterator[tuple[RayNode, RayNode, dict[str, str], Path, int]]:
    """Head and worker nodes, the application deployed on them; torn down whole."""
    with contextlib.ExitStack() as stack:
        job_url = stack.enter_context(postgres_schema_url())
        key_url = stack.enter_context(postgres_schema_url())
        prefix = stack.enter_context(fresh_redis_prefix())
        env = cluster_environment(job_url, key_url)
        args = scratch_args(tmp_path, tiny_cache)
        args["models"] = [m for m in args["models"] if m["name"] == "sd-tiny"]
        args["jobs"] = {
            # As in production: the URL (with its password) comes from each node's
            # environment; this one would not even resolve.
            "store_url": "postgresql+psycopg://image_serving@postgres.internal/jobs",
            "lease_s": 6,
            "sweep_interval_s": 1,
            "poll_interval_s": 0.2,
            "webhooks": {
                "allow_http": True,
                "allowed_hosts": [webhook_receiver.host],
                "retry_schedule_s": [0.5, 1, 1],
            },
        }
        args["auth"] = {
            "enabled": True,
            "database_url": "postgresql+psycopg://image_serving@postgres.internal/keys",
            "cache_ttl_s": 5,
        }
        args["rate_limits"] = {
            "enabled": True,
            "redis_url": REDIS_URL,
            "key_prefix": prefix,
            "requests_per_minute": 100_000,
        }
        args["storage"] = {
            "kind": "s3",
            "s3": {
                "bucket": s3_bucket,
                "endpoint_url": s3_server.endpoint_url,
                "region": "us-east-1",
                "addressing_style": "path",
            },
        }
        port = free_port()
        config_file = tmp_path / "cluster.yaml"
        config_file.write_text(yaml.safe_dump(serve_config(args, port)))
        head = RayNode(env, tmp_path / "head.log", None, "head")
        worker = None
        try:
            address = f"http://127.0.0.1:{head.dashboard_port}"
            wait_until(lambda: head.started() and dashboard_up(address), 120, "the head")
            worker = RayNode(env, tmp_path / "worker.log", head.port, "worker")
            wait_until(worker.started, 120, "the worker node")
            yield head, worker, {**env, "RAY_DASHBOARD_ADDRESS": address}, config_file, port
        finally:
            for node in (worker, head):
                if node is not None:
                    node.kill()


class Traffic(BackgroundLoop):
    """One client sending generations in a loop: (time, status, content type, body); the
    body whole for a failure (an envelope, or the proxy's short text), none for a 200."""

    def __init__(self, url: str, key: str):
        super().__init__()
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        self.answers: list[tuple[float, int, str, str]] = []

    def step(self) -> None:
        try:
            answer = self.client.post("/v1/images/generations", json=SYNC)
            # Whole: a cut envelope would not parse (a proxy's request id is a long UUID).
            body = answer.text if answer.status_code != 200 else ""
            entry = (answer.status_code, answer.headers.get("content-type", ""), body)
        except httpx.HTTPError as error:
            entry = (0, "", type(error).__name__)
        self.answers.append((time.monotonic(), *entry))

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.client.close()


def test_a_node_dies_under_load(cluster, tmp_path, webhook_receiver, s3_server):
    head, worker, env, config_file, port = cluster
    url = f"http://127.0.0.1:{port}"
    run([str(BIN / "serve"), "deploy", str(config_file)], env, tmp_path)
    wait_until(
        lambda: "status: RUNNING" in run([str(BIN / "serve"), "status"], env, tmp_path),
        timeout_s=300,
        what="serve status: the application RUNNING",
    )
    created = run(
        [
            str(BIN / "image-service-keys"),
            "--config",
            str(config_file),
            "create",
            "--tenant",
            "acme",
            "--name",
            "multinode",
            "--scopes",
            "generate,jobs",
        ],
        env,
        tmp_path,
    )
    key = next(word for word in created.split() if word.startswith("sk-"))
    headers = {"Authorization": f"Bearer {key}"}
    ready = httpx.get(f"{url}/v1/health/ready", timeout=30).json()
    assert ready["status"] == "ok", ready
    for name in ("Gateway", "PromptTemplater", "JobRunner", "sd-tiny"):
        assert ready["deployments"][name]["running"] == 2, ready

    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        job_ids = [
            client.post(
                "/v1/jobs",
                json={
                    **generation_job(f"node loss {i}", **JOB),
                    "callback_url": webhook_receiver.url("/ok"),
                },
            ).json()["id"]
            for i in range(6)
        ]
        with Traffic(url, key) as traffic:
            wait_until(
                lambda: any(
                    client.get(f"/v1/jobs/{j}").json()["status"] == "running" for j in job_ids
                ),
                what="a job running",
            )
            killed_at = time.monotonic()
            worker.kill()
            jobs = [wait_for_job(client, job_id, timeout_s=300) for job_id in job_ids]
            # Requests go on being served by what is left.
            wait_until(
                lambda: any(t > killed_at and s == 200 for t, s, *_ in traffic.answers[-3:]),
                timeout_s=180,
                what="a generation served after the node died",
            )
        # Serve notices each deployment's lost replica on its own health check, so the
        # first "degraded" can still count a dead replica of another deployment: wait
        # until every deployment has dropped to the one replica the live node holds.
        degraded = wait_until(
            lambda: (
                (r := httpx.get(f"{url}/v1/health/ready", timeout=30)).status_code == 200
                and r.json()["status"] == "degraded"
                and all(r.json()["deployments"][name]["running"] == 1 for name in ONE_PER_NODE)
                and r.json()
            ),
            timeout_s=180,
            what="readiness: degraded, one replica of each deployment running",
        )

    for job in jobs:
        assert job["status"] == "succeeded", job
        assert len(job["result"]["images"]) == 1
    wait_until(
        lambda: (
            {e["data"]["id"] for e in verified_events(webhook_receiver.received("/ok"))}
            >= set(job_ids)
        ),
        what="every job's webhook",
    )
    events = [
        e for e in verified_events(webhook_receiver.received("/ok")) if e["data"]["id"] in job_ids
    ]
    assert sorted(e["data"]["id"] for e in events) == sorted(job_ids)  # each announced once

    # One node left: one of each deployment runs, the second cannot be placed.
    for name in ONE_PER_NODE:
        assert degraded["deployments"][name]["running"] == 1, degraded
        assert degraded["deployments"][name]["target"] == 2, degraded

    after = [(t, s, kind, body) for t, s, kind, body in traffic.answers if t >= killed_at]
    statuses = Counter(s for _, s, *_ in after)
    failures = [(s, kind, body) for _, s, kind, body in after if s != 200]
    # Only what the README says a node loss costs: requests in flight on the dead node's
    # replicas fail (the proxy's plain-text 500 for a dead Gateway, the envelope's 503
    # for a lost model replica); nothing else.
    for status, kind, body in failures:
        assert status in (500, 503), (status, kind, body)
        if status == 503:
            assert json.loads(body)["error"]["code"] in ("replica_unavailable", "model_overloaded")
    successes = [t for t, s, *_ in after if s == 200]
    gap = successes[0] - killed_at
    print(
        f"multinode: {len(after)} requests after the kill, statuses {dict(statuses)}, "
        f"first success {gap:.1f} s after it; 6/6 jobs succeeded once "
        f"(attempts {[job['attempts'] for job in jobs]}), 6 webhooks"
    )
