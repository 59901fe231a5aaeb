"""The console's and /docs's files and headers in-process (the browser tests drive them in
Chromium): served from the package, nothing from a CDN, no inline script, a strict
Content-Security-Policy; off unless enabled; the bearer scheme in OpenAPI where keys are
on; and POST /v1/jobs/{id}/retry."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from serve_app.api.routes.console import CONSOLE_DIR
from serve_app.config import AppConfig
from tests.helpers import assert_error, in_process_app, local_args

ANONYMOUS = {"enabled": False, "allow_anonymous_on_loopback": True}


def client(tmp_path: Path, **sections) -> httpx.AsyncClient:
    args = local_args(
        auth=ANONYMOUS,
        rate_limits={"enabled": False},
        storage={"root": str(tmp_path / "images")},
        jobs={"store_url": f"sqlite:///{tmp_path}/jobs.sqlite3"},
    )
    args.update(sections)
    app = in_process_app(AppConfig.model_validate(args))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def policy(response: httpx.Response) -> dict[str, str]:
    directives = response.headers["content-security-policy"].split(";")
    return {d.split()[0]: " ".join(d.split()[1:]) for d in map(str.strip, directives) if d}


async def test_the_console_page_loads_only_its_own_files(tmp_path):
    async with client(tmp_path) as http:
        page = await http.get("/console")
        script = await http.get("/console/js/main.js")
        styles = await http.get("/console/console.css")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert script.headers["content-type"].startswith("text/javascript")
    assert styles.headers["content-type"].startswith("text/css")
    rules = policy(page)
    assert rules["default-src"] == "'none'"
    assert rules["script-src"] == "'self'"
    assert rules["style-src"] == "'self'"
    assert rules["connect-src"] == "'self'"
    assert rules["frame-ancestors"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_no_file_of_the_console_reaches_outside_or_runs_inline():
    for path in CONSOLE_DIR.rglob("*"):
        if path.suffix not in (".html", ".js", ".css"):
            continue
        text = path.read_text()
        # Links in code snippets are built from the page's own address at run time.
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), path
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), path
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path
            assert not re.search(r"\sstyle=", text), path
            assert not re.search(r"\son[a-z]+=", text), path


@pytest.mark.parametrize(
    "path", ["/console/../config.py", "/console/js/../../config.py", "/console/nothing.js"]
)
async def test_only_shipped_files_are_served(tmp_path, path):
    async with client(tmp_path) as http:
        response = await http.get(path)
    assert response.status_code == 404


async def test_the_console_is_off_unless_enabled(tmp_path):
    async with client(tmp_path, console={"enabled": False}) as http:
        page = await http.get("/console")
        docs = await http.get("/docs")
    assert_error(page, 404)
    assert docs.status_code == 200


async def test_docs_serve_swagger_ui_from_the_package(tmp_path):
    async with client(tmp_path) as http:
        page = await http.get("/docs")
        assets = {
            name: await http.get(f"/docs/{name}")
            for name in ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js")
        }
        missing = await http.get("/docs/swagger-editor-bundle.js")
    assert 'src="docs/swagger-ui-bundle.js"' in page.text
    assert "cdn" not in page.text.lower()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
    assert policy(page)["script-src"] == "'self'"
    for name, response in assets.items():
        assert response.status_code == 200, name
    assert len(assets["swagger-ui-bundle.js"].content) > 500_000
    assert missing.status_code == 404


async def test_openapi_declares_the_bearer_key_where_keys_are_on(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_SERVICE_KEY_PEPPER", "unit-pepper-0123456789abcdef")
    keyed = {"database_url": f"sqlite:///{tmp_path}/keys.db"}
    async with client(tmp_path, auth=keyed) as http:
        schema = (await http.get("/openapi.json")).json()
    async with client(tmp_path) as http:
        anonymous = (await http.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["apiKey"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    generation = schema["paths"]["/v1/images/generations"]["post"]
    assert generation["security"] == [{"apiKey": []}]
    assert "security" not in schema["paths"]["/v1/health"]["get"]
    assert "securitySchemes" not in anonymous["components"]
    assert "security" not in anonymous["paths"]["/v1/images/generations"]["post"]


GENERATION_JOB = {
    "type": "image_generation",
    "request": {"model": "sd-tiny", "prompt": "a mug", "size": "64x64", "steps": 2, "seed": 11},
    "metadata": {"order": "42"},
}


async def test_a_canceled_job_is_retried_as_a_new_job_with_its_request(tmp_path):
    async with client(tmp_path) as http:
        first = (await http.post("/v1/jobs", json=GENERATION_JOB)).json()
        queued_retry = await http.post(f"/v1/jobs/{first['id']}/retry")
        await http.delete(f"/v1/jobs/{first['id']}")
        retried = await http.post(f"/v1/jobs/{first['id']}/retry")
        missing = await http.post("/v1/jobs/job_nothing/retry")
        listed = (await http.get("/v1/jobs")).json()["data"]
    assert_error(queued_retry, 409, "job_not_retryable", "job_id")
    assert retried.status_code == 202
    job = retried.json()
    assert job["id"] != first["id"]
    assert retried.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["metadata"] == {"order": "42"}
    assert_error(missing, 404, "job_not_found")
    assert {entry["id"]: entry["status"] for entry in listed} == {
        first["id"]: "canceled",
        job["id"]: "queued",
    }


async def test_a_retry_keeps_the_seed_the_first_job_was_given(tmp_path):
    from serve_app.jobs.store import JobStore
    from serve_app.security.guard import ANONYMOUS_TENANT

    unseeded = {**GENERATION_JOB, "request": {**GENERATION_JOB["request"], "seed": None}}
    async with client(tmp_path) as http:
        first = (await http.post("/v1/jobs", json=unseeded)).json()
        await http.delete(f"/v1/jobs/{first['id']}")
        retried = (await http.post(f"/v1/jobs/{first['id']}/retry")).json()
    store = JobStore(f"sqlite:///{tmp_path}/jobs.sqlite3")
    try:
        requests = [store.get_job(job["id"], ANONYMOUS_TENANT).request for job in (first, retried)]
    finally:
        store.dispose()
    assert requests[0] == requests[1]
    assert isinstance(requests[0]["seed"], int)
