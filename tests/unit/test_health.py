"""Liveness, readiness and the full health report: the real FastAPI app over ASGI with a
real SQLite job and key store and a real (or unreachable) Redis; the deployments' replica
counts in the shape the Serve controller reports them. The integration tests kill a real
model replica and watch readiness."""

from __future__ import annotations

import pytest

from serve_app.ray_adapter import replica_count
from serve_app.service.readiness import ReplicaCount, readiness
from tests.security_fixtures import REDIS_URL, closed_port
from tests.unit.test_security_http import app_args, client_for, pepper  # noqa: F401

MODELS = ["sd-tiny", "z-image-tiny"]


def count(running: int, target: int = 1, floor: int = 1) -> ReplicaCount:
    return ReplicaCount(status="HEALTHY", running=running, target=target, min_replicas=floor)


AT_TARGET = {"Gateway": count(2, 2), "PromptTemplater": count(1), "JobRunner": count(1)}


@pytest.mark.parametrize(
    ("replicas", "status", "short"),
    [
        ({**AT_TARGET, "sd-tiny": count(1)}, "ok", None),
        # Below target but serving: capacity is short, the load balancer keeps it.
        ({**AT_TARGET, "Gateway": count(1, 2), "sd-tiny": count(1)}, "degraded", "Gateway"),
        ({**AT_TARGET, "sd-tiny": count(1, target=3)}, "degraded", "sd-tiny"),
        # Accepted jobs wait in the store while the JobRunner comes back.
        ({**AT_TARGET, "JobRunner": count(0), "sd-tiny": count(1)}, "degraded", "JobRunner"),
        # No replica of the only model: every image request would fail.
        ({**AT_TARGET, "sd-tiny": count(0)}, "unavailable", "sd-tiny"),
        # One model down (it failed to start), another serving: only its requests fail.
        (
            {**AT_TARGET, "sd-tiny": count(0), "z-image-tiny": count(1)},
            "degraded",
            "sd-tiny",
        ),
        ({**AT_TARGET, "sd-tiny": count(0), "z-image-tiny": count(0)}, "unavailable", None),
        ({**AT_TARGET, "PromptTemplater": count(0), "sd-tiny": count(1)}, "unavailable", None),
        # Scaled to zero on purpose: the first request scales it up.
        ({**AT_TARGET, "sd-tiny": count(0, target=0, floor=0)}, "ok", None),
    ],
)
async def test_readiness_from_replica_counts(replicas, status, short):
    report = await readiness([], replicas, MODELS)
    assert report["status"] == status
    if short is not None:
        assert report["deployments"][short]["state"] == status
        assert report["deployments"][short]["running"] == replicas[short].running


async def test_a_controller_that_does_not_answer_changes_nothing():
    report = await readiness([], None, MODELS)
    assert report == {"status": "ok", "dependencies": {}, "deployments": None}


def test_replica_count_reads_the_controllers_details():
    fixed = {
        "status": "UPDATING",
        "deployment_config": {"num_replicas": 2},
        "target_num_replicas": 2,
        "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}],
    }
    assert replica_count(fixed) == ReplicaCount("UPDATING", running=1, target=2, min_replicas=2)
    autoscaled = {
        "status": "HEALTHY",
        "deployment_config": {"autoscaling_config": {"min_replicas": 0, "max_replicas": 4}},
        "target_num_replicas": 0,
        "replicas": [],
    }
    assert replica_count(autoscaled) == ReplicaCount("HEALTHY", 0, target=0, min_replicas=0)


async def test_every_store_answers(tmp_path):
    limits = {"enabled": True, "redis_url": REDIS_URL}
    async with client_for(tmp_path, app_args(tmp_path, rate_limits=limits)) as client:
        ready = await client.get("/v1/health/ready")
        full = await client.get("/v1/health")
    assert ready.status_code == 200 and full.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "dependencies": {
            "job_store": {"status": "ok", "required": True, "reason": None},
            "key_store": {"status": "ok", "required": True, "reason": None},
            "redis": {"status": "ok", "required": False, "reason": None},
        },
        "deployments": None,
    }
    assert full.json()["models"] == []


@pytest.mark.parametrize(
    ("policy", "status", "code"), [("allow", "degraded", 200), ("deny", "unavailable", 503)]
)
async def test_redis_down_is_as_serious_as_its_policy_makes_it(tmp_path, policy, status, code):
    """Where limits let requests pass without Redis, the service is degraded; where they
    refuse them, requests would fail, and readiness says 503. Liveness stays 200."""
    limits = {
        "enabled": True,
        "redis_url": f"redis://127.0.0.1:{closed_port()}/0",
        "redis_timeout_s": 0.5,
        "on_backend_error": policy,
    }
    async with client_for(tmp_path, app_args(tmp_path, rate_limits=limits)) as client:
        live = await client.get("/v1/health/live")
        ready = await client.get("/v1/health/ready")
        full = await client.get("/v1/health")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert ready.status_code == code
    body = ready.json()
    assert body["status"] == status
    assert body["dependencies"]["redis"]["status"] == "unreachable"
    assert body["dependencies"]["redis"]["required"] is (policy == "deny")
    assert body["dependencies"]["redis"]["reason"]
    assert body["dependencies"]["job_store"]["status"] == "ok"
    # The full report is for monitors: anything short is a 503 there.
    assert full.status_code == 503 and full.json()["status"] == status
