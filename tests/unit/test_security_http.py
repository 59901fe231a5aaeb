"""The door in front of the real FastAPI app (create_app), over ASGI, with a real SQLite
key store, the in-process limiter or a real Redis: 401/403/429/413/504, headers, CORS and
anonymous loopback access. No model runs here; the integration tests generate."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from serve_app.config import AppConfig
from serve_app.observability.metrics import DEPENDENCY_FAILURES, InMemorySink, ServiceMetrics
from serve_app.security.key_store import KeyStore
from serve_app.security.keys import KeyHasher
from tests.helpers import assert_error, in_process_app, local_args
from tests.security_fixtures import REDIS_URL, closed_port, fresh_redis_prefix

PEPPER = "http-test-pepper-0123456789abcdef"
TINY_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
        "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
    )
).decode()


def app_args(tmp_path: Path, **sections) -> dict:
    auth = {"enabled": True, "database_url": f"sqlite:///{tmp_path}/keys.db", "cache_ttl_s": 0}
    base = {
        "auth": auth,
        "rate_limits": {"enabled": False},
        "storage": {"root": str(tmp_path / "images")},
        "jobs": {"store_url": f"sqlite:///{tmp_path}/jobs.sqlite3"},
    }
    return local_args(**{**base, **sections})


def client_for(tmp_path: Path, args: dict, host: str = "127.0.0.1") -> httpx.AsyncClient:
    app = in_process_app(AppConfig.model_validate(args))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


@pytest.fixture(autouse=True)
def pepper(monkeypatch):
    monkeypatch.setenv("IMAGE_SERVICE_KEY_PEPPER", PEPPER)


@pytest.fixture
def store(tmp_path):
    key_store = KeyStore.open(f"sqlite:///{tmp_path}/keys.db", KeyHasher(PEPPER.encode()))
    yield key_store
    key_store.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


GENERATION = {"model": "sd-tiny", "prompt": "a mug", "size": "64x64"}
EDIT = {"model": "pix2pix-tiny", "prompt": "blue", "images": [{"b64_json": TINY_PNG}]}
PROTECTED = [
    ("POST", "/v1/images/generations", GENERATION),
    ("POST", "/v1/images/edits", EDIT),
    ("POST", "/v1/chat/completions", {}),
    ("GET", "/v1/jobs", None),
    ("POST", "/v1/jobs", {}),
    ("DELETE", "/v1/jobs/job_1", None),
    ("POST", "/v1/batches", {}),
    ("GET", "/v1/admin/keys", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/sd-tiny", None),
    ("GET", "/v1/templates", None),
    ("GET", "/v1/styles", None),
    ("GET", "/v1/no-such-route", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
async def test_every_protected_route_wants_a_key(tmp_path, method, path, body):
    async with client_for(tmp_path, app_args(tmp_path)) as client:
        response = await client.request(method, path, json=body)
    assert_error(response, 401, "missing_api_key")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"),
    [
        ("POST", "/v1/images/generations", GENERATION, "generate"),
        ("POST", "/v1/images/edits", EDIT, "edit"),
        ("POST", "/v1/chat/completions", {}, "chat"),
        ("GET", "/v1/jobs", None, "jobs"),
        ("POST", "/v1/batches", {}, "jobs"),
        ("GET", "/v1/admin/keys", None, "admin"),
    ],
)
async def test_a_key_without_the_routes_scope_gets_403(tmp_path, store, method, path, body, scope):
    others = [s for s in ("generate", "edit", "chat", "jobs", "admin") if s != scope]
    key = store.create_key("acme", "crm", others).key
    async with client_for(tmp_path, app_args(tmp_path)) as client:
        response = await client.request(method, path, json=body, headers=bearer(key))
    assert_error(response, 403, "insufficient_scope")


async def test_public_routes_need_no_key(tmp_path):
    async with client_for(tmp_path, app_args(tmp_path)) as client:
        assert (await client.get("/v1/health")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
        # Signed file links check their own signature.
        files = await client.get("/files/abc.png", params={"expires": 1, "sig": "x"})
    assert_error(files, 403, "invalid_signature")


async def test_a_key_limited_to_some_models_is_refused_the_others(tmp_path, store):
    key = store.create_key("acme", "crm", ["generate", "edit"], ["z-image-tiny"]).key
    async with client_for(tmp_path, app_args(tmp_path)) as client:
        generation = await client.post(
            "/v1/images/generations", json=GENERATION, headers=bearer(key)
        )
        edit = await client.post("/v1/images/edits", json=EDIT, headers=bearer(key))
        card = await client.get("/v1/models/sd-tiny", headers=bearer(key))
        listing = await client.get("/v1/models", headers=bearer(key))
    for response in (generation, edit, card):
        assert_error(response, 403, "model_not_allowed")
    assert [m["id"] for m in listing.json()["data"]] == ["z-image-tiny"]


async def test_bearer_and_x_api_key_both_work_and_other_schemes_do_not(tmp_path, store):
    key = store.create_key("acme", "crm", ["generate"]).key
    async with client_for(tmp_path, app_args(tmp_path)) as client:
        assert (await client.get("/v1/templates", headers=bearer(key))).status_code == 200
        assert (await client.get("/v1/templates", headers={"x-api-key": key})).status_code == 200
        basic = await client.get("/v1/templates", headers={"Authorization": f"Basic {key}"})
        wrong = await client.get("/v1/templates", headers=bearer(key[:-2] + "zz"))
    assert_error(basic, 401, "invalid_authorization_header")
    assert_error(wrong, 401, "invalid_api_key")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]


async def test_a_revoked_key_stops_at_once_without_a_cache(tmp_path, store):
    issued = store.create_key("acme", "crm", ["generate"])
    async with client_for(tmp_path, app_args(tmp_path)) as client:
        assert (await client.get("/v1/styles", headers=bearer(issued.key))).status_code == 200
        store.revoke(issued.record.prefix)
        response = await client.get("/v1/styles", headers=bearer(issued.key))
    assert_error(response, 401, "invalid_api_key")
    assert store.get(issued.record.prefix).last_used_at is not None


async def test_over_the_rate_429_with_retry_after_and_ratelimit_headers(tmp_path, store):
    key = store.create_key("acme", "crm", ["generate"]).key
    limits = {"requests_per_minute": 3, "max_concurrent": 1}
    async with client_for(tmp_path, app_args(tmp_path, rate_limits=limits)) as client:
        answers = [await client.get("/v1/models", headers=bearer(key)) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    # max_concurrent 1 and three sequential 200s: each slot was given back.
    assert answers[0].headers["ratelimit-policy"] == '"tenant";q=3;w=60'
    assert answers[0].headers["ratelimit"].startswith('"tenant";r=2;t=')
    refused = answers[-1]
    assert_error(refused, 429, "rate_limit_exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["ratelimit"].startswith('"tenant";r=0;t=')


async def test_public_routes_are_not_limited(tmp_path):
    limits = {"requests_per_minute": 1}
    async with client_for(tmp_path, app_args(tmp_path, rate_limits=limits)) as client:
        answers = [await client.get("/v1/health") for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert "ratelimit" not in answers[0].headers


@pytest.mark.parametrize(("policy", "status"), [("allow", 200), ("deny", 503)])
async def test_redis_unreachable_follows_the_configured_policy(tmp_path, store, policy, status):
    key = store.create_key("acme", "crm", ["generate"]).key
    limits = {
        "redis_url": f"redis://127.0.0.1:{closed_port()}/0",
        "redis_timeout_s": 0.5,
        "on_backend_error": policy,
    }
    sink = InMemorySink()
    app = in_process_app(
        AppConfig.model_validate(app_args(tmp_path, rate_limits=limits)),
        metrics=ServiceMetrics(sink),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/v1/models", headers=bearer(key))
    assert response.status_code == status
    # Either way ops can see it: a counted failure (and a log line, at most every 30 s).
    assert sink.values(DEPENDENCY_FAILURES, dependency="rate_limiter") == [1]
    if status == 503:
        assert_error(response, 503, "rate_limiter_unavailable")
        assert response.headers["retry-after"] == "1"


async def test_redis_shares_one_tenant_budget_between_two_apps(tmp_path, store):
    """Two Gateways (two apps here, two replicas in the integration test) share one budget."""
    key = store.create_key("acme", "crm", ["generate"]).key
    with fresh_redis_prefix() as prefix:
        limits = {
            "redis_url": REDIS_URL,
            "requests_per_minute": 4,
            "key_prefix": prefix,
            # A loaded machine is not a Redis outage (which would let requests through).
            "redis_timeout_s": 10,
        }
        args = app_args(tmp_path, rate_limits=limits)
        async with client_for(tmp_path, args) as one, client_for(tmp_path, args) as two:
            statuses = [
                (await client.get("/v1/models", headers=bearer(key))).status_code
                for client in (one, two, one, two, one, two)
            ]
    assert statuses == [200, 200, 200, 200, 429, 429]


async def test_anonymous_mode_serves_loopback_only(tmp_path):
    args = app_args(tmp_path, auth={"enabled": False, "allow_anonymous_on_loopback": True})
    async with client_for(tmp_path, args) as local:
        assert (await local.get("/v1/models")).status_code == 200
    async with client_for(tmp_path, args, host="10.0.0.5") as remote:
        response = await remote.get("/v1/models")
    assert_error(response, 403, "anonymous_access_refused")


async def test_the_gateway_deadline_answers_504_in_the_envelope(tmp_path, store):
    key = store.create_key("acme", "crm", ["generate"]).key
    gateway = {"route_timeouts_s": {"/v1/models": 0.000001}}
    async with client_for(tmp_path, app_args(tmp_path, gateway=gateway)) as client:
        slow = await client.get("/v1/models", headers=bearer(key))
        other = await client.get("/v1/templates", headers=bearer(key))
    error = assert_error(slow, 504, "request_timeout")
    assert error["type"] == "timeout_error"
    assert other.status_code == 200


async def test_body_limits_hold_with_the_door_in_front(tmp_path, store):
    key = store.create_key("acme", "crm", ["generate"]).key
    gateway = {"max_request_bytes": 2048}
    big = b'{"prompt": "' + b"x" * 10_000 + b'"}'

    async def streamed():
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    json_headers = {"content-type": "application/json"}
    async with client_for(tmp_path, app_args(tmp_path, gateway=gateway)) as client:
        declared = await client.post(
            "/v1/images/generations", content=big, headers={**bearer(key), **json_headers}
        )
        chunked = await client.post(
            "/v1/images/generations", content=streamed(), headers={**bearer(key), **json_headers}
        )
        anonymous = await client.post(
            "/v1/images/generations", content=streamed(), headers=json_headers
        )
    assert_error(declared, 413, "body_too_large")
    assert_error(chunked, 413, "body_too_large")
    assert_error(anonymous, 401, "missing_api_key")


async def test_cors_preflight_needs_no_key_and_errors_carry_cors_headers(tmp_path):
    cors = {"allow_origins": ["https://oa.example.com"]}
    async with client_for(tmp_path, app_args(tmp_path, cors=cors)) as client:
        preflight = await client.options(
            "/v1/images/generations",
            headers={
                "Origin": "https://oa.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        stranger = await client.options(
            "/v1/images/generations",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        refused = await client.get("/v1/models", headers={"Origin": "https://oa.example.com"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://oa.example.com"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert stranger.status_code == 400
    assert "access-control-allow-origin" not in stranger.headers
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://oa.example.com"
    assert "retry-after" in refused.headers["access-control-expose-headers"].lower()


async def test_a_job_event_stream_holds_no_in_flight_slot(tmp_path, store):
    key = store.create_key("acme", "crm", ["generate", "jobs"]).key
    limits = {"requests_per_minute": 100, "max_concurrent": 1}
    args = app_args(tmp_path, rate_limits=limits)
    args["jobs"]["event_stream_s"] = 1  # the stream closes itself after a second
    async with client_for(tmp_path, args) as client:
        job = await client.post(
            "/v1/jobs",
            headers=bearer(key),
            json={"type": "image_generation", "request": GENERATION},
        )
        assert job.status_code == 202, job.text

        async def watch() -> httpx.Response:
            return await client.get(f"/v1/jobs/{job.json()['id']}/events", headers=bearer(key))

        async def meanwhile() -> httpx.Response:
            await asyncio.sleep(0.3)  # the stream is open
            return await client.get("/v1/jobs", headers=bearer(key))

        stream, listing = await asyncio.gather(watch(), meanwhile())
    assert stream.status_code == 200 and "event: status" in stream.text
    # With max_concurrent 1, the listing got in while the stream was open.
    assert listing.status_code == 200, listing.text
