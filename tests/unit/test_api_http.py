"""The HTTP face in-process (no Ray, no model runs): what the OpenAPI document says, and
that the service holds to it where requests are malformed in ways a client might try."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serve_app.config import AppConfig
from tests.helpers import assert_error, in_process_app, local_args, png_bytes

ANONYMOUS = {"enabled": False, "allow_anonymous_on_loopback": True}
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3cDzLKVWqb0="


def client(tmp_path: Path, webhooks_enabled: bool = True) -> httpx.AsyncClient:
    args = local_args(
        auth=ANONYMOUS,
        rate_limits={"enabled": False},
        storage={"root": str(tmp_path / "images")},
        jobs={
            "store_url": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "webhooks": {"enabled": webhooks_enabled},
        },
    )
    app = in_process_app(AppConfig.model_validate(args))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def openapi(tmp_path: Path, **options) -> dict:
    async with client(tmp_path, **options) as http:
        return (await http.get("/openapi.json")).json()


async def test_the_edit_route_documents_its_json_and_multipart_bodies(tmp_path):
    body = (await openapi(tmp_path))["paths"]["/v1/images/edits"]["post"]["requestBody"]
    content = body["content"]
    assert content["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ImageEditRequest"
    }
    form = content["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["format"] == "binary"
    assert form["properties"]["image[]"]["items"]["format"] == "binary"
    assert {"images", "mask"} & set(form["properties"]) == {"mask"}
    assert form["anyOf"] == [{"required": ["image"]}, {"required": ["image[]"]}]
    # A form has no null: optional fields are left out instead.
    assert "anyOf" not in form["properties"]["steps"]


async def test_malformed_requests_are_documented_as_the_400_envelope(tmp_path):
    schema = await openapi(tmp_path)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "HTTPValidationError" not in str(responses), (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert responses["400"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorResponse"
                }, (method, path)
    files = schema["paths"]["/files/{key}"]["get"]["responses"]
    assert {"image/png", "image/jpeg", "image/webp"} <= set(files["200"]["content"])
    assert "403" in files and "404" in files


async def test_callback_url_is_offered_only_where_webhooks_are_on(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGE_SERVICE_WEBHOOK_SECRETS", raising=False)
    no_secrets = (await openapi(tmp_path / "none"))["components"]["schemas"]
    monkeypatch.setenv("IMAGE_SERVICE_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    on = (await openapi(tmp_path / "on"))["components"]["schemas"]
    off = (await openapi(tmp_path / "off", webhooks_enabled=False))["components"]["schemas"]
    for name in ("ImageGenerationJobCreate", "ImageEditJobCreate", "BatchCreateRequest"):
        assert "callback_url" not in no_secrets[name]["properties"]
        assert "callback_url" in on[name]["properties"]
        assert "callback_url" not in off[name]["properties"]


async def test_a_secret_file_mounted_for_the_webhooks_turns_them_on(tmp_path, monkeypatch):
    secret_file = tmp_path / "webhook-secrets"
    secret_file.write_text(WEBHOOK_SECRET + "\n")
    monkeypatch.delenv("IMAGE_SERVICE_WEBHOOK_SECRETS", raising=False)
    monkeypatch.setenv("IMAGE_SERVICE_WEBHOOK_SECRETS_FILE", str(secret_file))
    schemas = (await openapi(tmp_path))["components"]["schemas"]
    assert "callback_url" in schemas["ImageGenerationJobCreate"]["properties"]


async def test_a_405_allows_every_method_of_the_path(tmp_path):
    async with client(tmp_path) as http:
        collection = await http.put("/v1/jobs")
        item = await http.post("/v1/jobs/job_1")
    assert_error(collection, 405)
    assert collection.headers["allow"] == "GET, POST"
    assert_error(item, 405)
    assert item.headers["allow"] == "DELETE, GET"


@pytest.mark.parametrize(
    "field",
    [{"n": True}, {"n": "2"}, {"steps": "4"}, {"guidance_scale": False}, {"seed": "7"}],
)
async def test_json_numbers_must_be_numbers(tmp_path, field):
    (name,) = field
    async with client(tmp_path) as http:
        response = await http.post("/v1/images/generations", json={"prompt": "a mug", **field})
    assert_error(response, 400, "invalid_parameter", name)


async def test_form_fields_are_text_and_are_converted(tmp_path):
    files = {"image": ("a.png", png_bytes(8, 8), "image/png")}
    form = {"prompt": "blue", "n": "2", "guidance_scale": "3.5", "model": "no-such-model"}
    async with client(tmp_path) as http:
        response = await http.post("/v1/images/edits", data=form, files=files)
    # The form parsed: the refusal is the unknown model's.
    assert_error(response, 404, "model_not_found", "model")


async def test_a_form_over_its_file_limit_gets_the_envelope(tmp_path):
    files = [("image[]", (f"{i}.png", png_bytes(8, 8), "image/png")) for i in range(19)]
    async with client(tmp_path) as http:
        response = await http.post("/v1/images/edits", data={"prompt": "x"}, files=files)
    assert_error(response, 400, "invalid_form")


EDIT = {"model": "pix2pix-tiny", "prompt": "blue", "images": [{"b64_json": "AAAA"}]}


@pytest.mark.parametrize(
    ("job", "code", "param"),
    [
        ({"type": "image_generation", "request": {"prompt": " \t"}}, "empty_prompt", "prompt"),
        (
            {"type": "image_generation", "request": {"prompt": "a mug", "variables": {"a": "b"}}},
            "unexpected_variables",
            "variables",
        ),
        ({"type": "image_edit", "request": {**EDIT, "size": "big"}}, "invalid_size", "size"),
        ({"type": "image_edit", "request": {**EDIT, "size": "1024x1024"}}, "invalid_size", "size"),
    ],
)
async def test_a_job_is_refused_at_submission_for_what_needs_no_model_run(
    tmp_path, job, code, param
):
    async with client(tmp_path) as http:
        response = await http.post("/v1/jobs", json=job)
        listed = await http.get("/v1/jobs")
    assert_error(response, 400, code, f"request.{param}")
    assert listed.json()["data"] == []
