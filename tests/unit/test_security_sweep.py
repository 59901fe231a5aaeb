"""Every operation the OpenAPI document lists (so a new route cannot slip past) against
every kind of caller: no key, a revoked key, a key without the route's scope, and a
tenant asking for another tenant's jobs and batches. The real app over ASGI with a real
SQLite key store; no model runs."""

from __future__ import annotations

import re

import httpx
import pytest

from serve_app.config import AppConfig
from serve_app.security.scopes import ANY_KEY, PUBLIC, SCOPES, required_access
from tests.helpers import assert_error, in_process_app
from tests.unit import test_security_http as door
from tests.unit.test_security_http import app_args, bearer

# The door tests' fixtures: the key pepper (autouse) and the SQLite key store.
pepper, store = door.pepper, door.store

GENERATION_JOB = {
    "type": "image_generation",
    "request": {"model": "sd-tiny", "prompt": "a lamp", "size": "64x64"},
}


def operations(app) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, methods in app.openapi()["paths"].items()
        for method in methods
    ]


@pytest.fixture
async def setup(tmp_path, store):
    """The app, its operations, and keys: acme's with every scope, acme's revoked one, and
    globex's, which owns a job and a batch."""
    # The owner's look at a job's event stream ends after a second, not the default 300 s
    # (no runner moves the job here).
    jobs = {"store_url": f"sqlite:///{tmp_path}/jobs.sqlite3", "event_stream_s": 1}
    app = in_process_app(AppConfig.model_validate(app_args(tmp_path, jobs=jobs)))
    everything = sorted(SCOPES)
    keys = {
        "acme": store.create_key("acme", "all", everything).key,
        "globex": store.create_key("globex", "all", everything).key,
    }
    revoked = store.create_key("acme", "old", everything)
    store.revoke(revoked.record.prefix)
    keys["revoked"] = revoked.key
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        job = await client.post("/v1/jobs", json=GENERATION_JOB, headers=bearer(keys["globex"]))
        batch = await client.post(
            "/v1/batches", json={"jobs": [GENERATION_JOB]}, headers=bearer(keys["globex"])
        )
        assert job.status_code == 202 and batch.status_code == 202, (job.text, batch.text)
        ids = {"job_id": job.json()["id"], "batch_id": batch.json()["id"]}
        yield client, operations(app), keys, ids


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "sd-tiny"), path)


async def test_the_sweep_covers_every_operation(setup):
    _, ops, _, _ = setup
    assert len(ops) == 22
    assert ("POST", "/v1/jobs/{job_id}/retry") in ops
    assert ("GET", "/v1/loras") in ops


async def test_no_key_and_a_revoked_key_get_401_everywhere_but_public_routes(setup):
    client, ops, keys, ids = setup
    checked = 0
    for method, path in ops:
        if required_access(path) == PUBLIC:
            continue
        for headers, code in ((None, "missing_api_key"), (bearer(keys["revoked"]), None)):
            response = await client.request(method, fill(path, ids), json={}, headers=headers)
            assert_error(response, 401, code)
            assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
            checked += 1
    assert checked >= 2 * 16


@pytest.mark.parametrize("scope", sorted(SCOPES))
async def test_a_key_without_the_routes_scope_gets_403(setup, store, scope):
    client, ops, _, ids = setup
    others = [s for s in sorted(SCOPES) if s != scope]
    key = store.create_key("acme", f"no-{scope}", others).key
    guarded = [(m, p) for m, p in ops if required_access(p) == scope]
    for method, path in guarded:
        response = await client.request(method, fill(path, ids), json={}, headers=bearer(key))
        assert_error(response, 403, "insufficient_scope")
    # Routes any key may use are not refused for a missing scope.
    for method, path in ops:
        if required_access(path) == ANY_KEY and method == "GET":
            response = await client.request(method, fill(path, ids), headers=bearer(key))
            assert response.status_code != 403, (method, path)


async def test_another_tenants_jobs_and_batches_do_not_exist(setup):
    """Every route that takes a job or batch id answers acme as if globex's did not exist:
    404, the same as an id nobody has (no hint that it is someone else's)."""
    client, ops, keys, ids = setup
    owned = [(m, p) for m, p in ops if "{job_id}" in p or "{batch_id}" in p]
    assert len(owned) == 5
    for method, path in owned:
        theirs = await client.request(
            method, fill(path, ids), json={}, headers=bearer(keys["acme"])
        )
        nobodys = await client.request(
            method,
            fill(path, {"job_id": "job_" + "0" * 24, "batch_id": "batch_" + "0" * 24}),
            json={},
            headers=bearer(keys["acme"]),
        )
        assert theirs.status_code == nobodys.status_code == 404, (method, path, theirs.text)
        assert theirs.json()["error"]["code"] == nobodys.json()["error"]["code"]
        # The owner still sees it.
        if method == "GET":
            mine = await client.get(fill(path, ids), headers=bearer(keys["globex"]))
            assert mine.status_code == 200, (path, mine.text)
            assert ids["job_id"] in mine.text or ids["batch_id"] in mine.text, path
    listed = await client.get("/v1/jobs", headers=bearer(keys["acme"]))
    assert listed.status_code == 200 and listed.json()["data"] == []
