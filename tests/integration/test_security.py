"""API keys, scopes and shared tenant quotas on a real Serve application: a second app
("secure", under /secure) beside the shared anonymous one, with keys on, two Gateway
replicas and Redis on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import time

import httpx
import openai
import pytest
import redis

from serve_app.security.key_store import KeyStore
from serve_app.security.keys import KeyHasher
from tests.helpers import assert_error
from tests.integration.conftest import integration_app_args
from tests.security_fixtures import REDIS_URL, fresh_redis_prefix

pytestmark = pytest.mark.integration

PEPPER_ENV = "SECURE_TEST_KEY_PEPPER"
PEPPER = "integration-pepper-0123456789abcdef"
BURST_LIMIT = 10


@pytest.fixture(scope="module")
def secure(base_url, tiny_cache, tmp_path_factory):
    """(URL of the secure app, its key store, issued keys by role, Redis key prefix)."""
    from ray import serve

    from serve_app.config import AppConfig
    from serve_app.graph import compose

    root = tmp_path_factory.mktemp("secure")
    args = integration_app_args(root, tiny_cache)
    args["models"] = [m for m in args["models"] if m["name"] == "sd-tiny"]
    database_url = f"sqlite:///{root}/keys.db"
    args["auth"] = {"database_url": database_url, "pepper_env": PEPPER_ENV, "cache_ttl_s": 0}
    store = KeyStore.open(database_url, KeyHasher(PEPPER.encode()))
    keys = {
        "full": store.create_key("acme", "everything", ["generate", "edit", "chat", "jobs"]),
        "edit-only": store.create_key("acme", "editor", ["edit"]),
        "z-image-only": store.create_key("acme", "z", ["generate"], ["z-image-tiny"]),
        "burst": store.create_key("burst", "load", ["generate"]),
        "globex-jobs": store.create_key("globex", "crm", ["jobs"]),
        "acme-jobs-z-only": store.create_key("acme", "z jobs", ["jobs"], ["z-image-tiny"]),
    }
    with fresh_redis_prefix() as prefix:
        args["rate_limits"] = {
            "redis_url": REDIS_URL,
            "key_prefix": prefix,
            "requests_per_minute": 1000,
            "tenants": {"burst": {"requests_per_minute": BURST_LIMIT}},
            # A Redis failure must show up as 503s here, not as a silently open door...
            "on_backend_error": "deny",
            # ...and a slow machine is not one: the Gateway's loop may lag a second under
            # load, which the default 0.5 s would call a Redis failure.
            "redis_timeout_s": 10,
        }
        gateway_options = {
            "num_replicas": 2,
            "ray_actor_options": {
                "num_cpus": 0.1,
                "runtime_env": {"env_vars": {PEPPER_ENV: PEPPER}},
            },
        }
        serve.run(
            compose(AppConfig.model_validate(args), gateway_options),
            name="secure",
            route_prefix="/secure",
        )
        url = f"{base_url}/secure"
        assert httpx.get(f"{url}/v1/health", timeout=60).status_code == 200
        yield url, store, {role: issued.key for role, issued in keys.items()}, prefix
        serve.delete("secure")
        store.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


GENERATION = {"model": "sd-tiny", "prompt": "a mug", "size": "64x64", "steps": 2}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/images/edits"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/job_1"),
        ("DELETE", "/v1/jobs/job_1"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches/batch_1"),
        ("GET", "/v1/admin/keys"),
        ("GET", "/v1/models"),
        ("GET", "/v1/templates"),
        ("GET", "/v1/styles"),
    ],
)
def test_no_key_is_401_on_every_protected_route(secure, method, path):
    url, *_ = secure
    response = httpx.request(method, f"{url}{path}", json={}, timeout=30)
    assert_error(response, 401, code="missing_api_key")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("POST", "/v1/images/generations", "edit-only"),
        ("POST", "/v1/chat/completions", "edit-only"),
        ("POST", "/v1/jobs", "edit-only"),
        ("GET", "/v1/jobs", "edit-only"),
        ("GET", "/v1/jobs/job_1", "edit-only"),
        ("DELETE", "/v1/jobs/job_1", "edit-only"),
        ("POST", "/v1/batches", "edit-only"),
        ("GET", "/v1/batches/batch_1", "edit-only"),
        ("GET", "/v1/admin/keys", "full"),
    ],
)
def test_a_key_without_the_scope_is_403(secure, method, path, role):
    url, _, keys, _ = secure
    response = httpx.request(
        method, f"{url}{path}", json={}, headers=bearer(keys[role]), timeout=30
    )
    assert_error(response, 403, code="insufficient_scope")


def test_health_and_docs_need_no_key(secure):
    url, *_ = secure
    assert httpx.get(f"{url}/v1/health", timeout=30).status_code == 200
    assert httpx.get(f"{url}/docs", timeout=30).status_code == 200


def test_a_key_generates_within_its_models_and_carries_rate_headers(secure):
    url, _, keys, _ = secure
    allowed = httpx.post(
        f"{url}/v1/images/generations", json=GENERATION, headers=bearer(keys["full"]), timeout=120
    )
    assert allowed.status_code == 200, allowed.text
    assert len(allowed.json()["data"]) == 1
    assert allowed.headers["ratelimit-policy"] == '"tenant";q=1000;w=60'
    refused = httpx.post(
        f"{url}/v1/images/generations",
        json=GENERATION,
        headers={"x-api-key": keys["z-image-only"]},
        timeout=60,
    )
    assert_error(refused, 403, code="model_not_allowed", param="model")


def test_the_openai_sdk_sends_its_key(secure):
    url, _, keys, _ = secure
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=keys["full"], max_retries=0)
    result = client.images.generate(
        model="sd-tiny", prompt="a lamp", size="64x64", extra_body={"steps": 2}
    )
    assert len(result.data) == 1
    wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    editor = openai.OpenAI(base_url=f"{url}/v1", api_key=keys["edit-only"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        editor.images.generate(model="sd-tiny", prompt="x", size="64x64")


def test_a_revoked_key_is_refused(secure):
    url, store, _, _ = secure
    issued = store.create_key("acme", "short-lived", ["generate"])
    assert httpx.get(f"{url}/v1/models", headers=bearer(issued.key), timeout=30).status_code == 200
    store.revoke(issued.record.prefix)
    response = httpx.get(f"{url}/v1/models", headers=bearer(issued.key), timeout=30)
    assert_error(response, 401, code="invalid_api_key")


def test_a_burst_across_two_gateway_replicas_admits_about_the_limit(secure):
    from ray import serve

    url, _, keys, prefix = secure
    gateway = serve.status().applications["secure"].deployments["Gateway"]
    assert gateway.replica_states.get("RUNNING") == 2

    async def burst() -> tuple[list[httpx.Response], float]:
        limits = httpx.Limits(max_connections=3 * BURST_LIMIT)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(
                    client.get(f"{url}/v1/models", headers=bearer(keys["burst"]))
                    for _ in range(3 * BURST_LIMIT)
                )
            )
            return answers, time.monotonic() - started

    answers, elapsed_s = asyncio.run(burst())
    statuses = [a.status_code for a in answers]
    admitted = statuses.count(200)
    # The bucket refills at BURST_LIMIT per minute while the burst lasts.
    tolerance = 1 + math.ceil(elapsed_s * BURST_LIMIT / 60)
    assert set(statuses) <= {200, 429}, statuses
    assert BURST_LIMIT <= admitted <= BURST_LIMIT + tolerance, (admitted, elapsed_s)
    for refused in (a for a in answers if a.status_code == 429):
        assert_error(refused, 429, code="rate_limit_exceeded")
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-policy"] == f'"tenant";q={BURST_LIMIT};w=60'
    # The budget lives in Redis, where both replicas read it.
    shared = redis.Redis.from_url(REDIS_URL)
    assert shared.exists(f"{prefix}:{{burst}}:rate")
    shared.close()


def test_jobs_belong_to_their_tenant(secure):
    url, _, keys, _ = secure
    job_body = {"type": "image_generation", "request": GENERATION}
    made = httpx.post(f"{url}/v1/jobs", json=job_body, headers=bearer(keys["full"]), timeout=30)
    assert made.status_code == 202, made.text
    job_id = made.json()["id"]
    batch = httpx.post(
        f"{url}/v1/batches", json={"jobs": [job_body]}, headers=bearer(keys["full"]), timeout=30
    ).json()

    other = bearer(keys["globex-jobs"])
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("DELETE", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/batches/{batch['id']}"),
    ]:
        response = httpx.request(method, f"{url}{path}", headers=other, timeout=30)
        assert response.status_code == 404, (method, path, response.text)
        assert "not_found" in response.json()["error"]["code"]
    listed = httpx.get(f"{url}/v1/jobs", headers=other, timeout=30).json()["data"]
    assert job_id not in [job["id"] for job in listed]
    # The same Idempotency-Key in another tenant is another key.
    for key in ("full", "globex-jobs"):
        response = httpx.post(
            f"{url}/v1/jobs",
            json=job_body,
            headers={**bearer(keys[key]), "Idempotency-Key": "shared-key"},
            timeout=30,
        )
        assert response.status_code == 202
    owner = httpx.get(f"{url}/v1/jobs/{job_id}", headers=bearer(keys["full"]), timeout=30)
    assert owner.status_code == 200 and owner.json()["id"] == job_id

    refused = httpx.post(
        f"{url}/v1/jobs", json=job_body, headers=bearer(keys["acme-jobs-z-only"]), timeout=30
    )
    assert_error(refused, 403, code="model_not_allowed", param="model")
