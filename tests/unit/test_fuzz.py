"""Hostile input, generated (hypothesis): the image decoder with random bytes, mutated
valid PNG/JPEG/WebP files and headers claiming extreme sizes; every JSON route of the real
FastAPI app (a tiny sd model behind it, in this process) with arbitrary JSON, near-valid
bodies with one field replaced, and raw bytes. Whatever comes in: a 2xx, or a 4xx in the
error envelope; never a 5xx, never another exception."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.config import AppConfig
from serve_app.errors import ServiceError
from serve_app.images import ImageLimits, decode_image
from serve_app.models.engine import ModelEngine
from serve_app.models.image_replica import ImageReplica
from serve_app.prompts import PromptCatalog
from serve_app.prompts.catalog import PromptRequest
from serve_app.prompts.engine import render_template
from tests.helpers import REPO, in_process_app, scratch_args
from tests.hostile_input import JSON_VALUES, ROUTES, VALUES, mutated, near_valid

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=4_000_000, max_side=4096)
FUZZ = settings(
    max_examples=120,
    deadline=None,  # CI machines are slow; the limits, not the clock, are under test
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_decodes_or_refuses(data: bytes) -> None:
    try:
        image = decode_image(data, LIMITS, param="image")
    except ServiceError as error:
        assert 400 <= error.status_code < 500, error
        assert error.param == "image"
    else:
        assert image.width * image.height <= LIMITS.max_pixels
        assert max(image.size) <= LIMITS.max_side


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    assert_decodes_or_refuses(data)


@FUZZ
@given(mutated())
def test_mutated_valid_files(data):
    assert_decodes_or_refuses(data)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height (a valid IHDR) and holds a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@FUZZ
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_headers_claiming_any_size_are_refused_before_decoding(width, height):
    """A few bytes that claim a giant image are refused by the header's numbers (413),
    never decoded into memory; within the limits, the image is the claimed size (Pillow
    fills what a short but well-formed stream leaves out) or refused as truncated (400)."""
    too_big = width * height > LIMITS.max_pixels or max(width, height) > LIMITS.max_side
    try:
        image = decode_image(png_header(width, height), LIMITS, param="image")
    except ServiceError as error:
        assert error.status_code == (413 if too_big else 400), (width, height, error)
    else:
        assert not too_big and image.size == (width, height)


# --- template variables and prompts that try to break out -----------------------------------

CATALOG = PromptCatalog.from_yaml(REPO / "configs" / "templates.yaml")


@FUZZ
@given(first=VALUES, second=VALUES)
def test_template_values_are_inserted_as_text_and_never_parsed(first, second):
    rendered = render_template("shot of {a}, {{braces}} on {b}", {"a": first, "b": second})
    assert rendered == "shot of " + first + ", {braces} on " + second


@FUZZ
@given(
    variables=st.dictionaries(st.sampled_from(["product_name", "material", "x"]), VALUES),
    prompt=VALUES,
)
def test_a_catalog_template_renders_any_values_or_refuses_by_name(variables, prompt):
    request = PromptRequest(prompt=prompt, template="product-main-shot", variables=variables)
    try:
        rendered = CATALOG.render(request)
    except ServiceError as error:
        assert error.status_code == 400, error
        assert error.code in {"unknown_variable", "missing_variable", "variable_too_long"}, error
        assert error.param and error.param.startswith("variables"), error
        return
    # The template's own words are there, and the value as given (spaces collapsed; a
    # value with commas may lose a gap an optional variable left, so it is not compared).
    assert rendered.prompt.startswith("professional e-commerce main image of")
    name = " ".join(variables["product_name"].split())
    if "," not in name:
        assert name in rendered.prompt


# --- every JSON route of the real app ------------------------------------------------------


@pytest.fixture(scope="module")
def app_loop(tmp_path_factory, tiny_cache):
    """The app on its own event loop, with sd-tiny's real (tiny) model behind it, capped
    so that a valid request is cheap."""
    root = tmp_path_factory.mktemp("fuzz")
    args = scratch_args(
        root,
        tiny_cache,
        auth={"enabled": False, "allow_anonymous_on_loopback": True},
        rate_limits={"enabled": False},
    )
    sd = next(model for model in args["models"] if model["name"] == "sd-tiny")
    sd["limits"] = {"max_n": 2, "min_side": 64, "max_side": 64, "max_pixels": 4096, "max_steps": 2}
    sd["defaults"] = {**sd.get("defaults", {}), "size": "64x64", "steps": 2}
    args["models"] = [sd]
    config = AppConfig.model_validate(args)
    replica = ImageReplica(ModelEngine(config.models[0], tiny_cache))
    loop = asyncio.new_event_loop()
    app = in_process_app(config, {"sd-tiny": replica})
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    yield loop, client
    loop.run_until_complete(client.aclose())
    pending = asyncio.all_tasks(loop)  # the replica's batch queue
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


def post(app_loop, route: str, content: bytes) -> httpx.Response:
    loop, client = app_loop
    headers = {"content-type": "application/json"}
    return loop.run_until_complete(client.post(route, content=content, headers=headers, timeout=60))


def assert_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"], error


@FUZZ
@given(route=st.sampled_from(ROUTES), body=JSON_VALUES)
def test_any_json(app_loop, route, body):
    assert_answered(post(app_loop, route, json.dumps(body).encode()))


@FUZZ
@given(case=near_valid())
def test_near_valid_bodies(app_loop, case):
    route, body = case
    assert_answered(post(app_loop, route, json.dumps(body).encode()))


@FUZZ
@given(route=st.sampled_from(ROUTES), content=st.binary(max_size=512))
def test_raw_bytes(app_loop, route, content):
    assert_answered(post(app_loop, route, content))


@pytest.mark.parametrize("depth", [100, 5_000, 30_000])
def test_deep_nesting(app_loop, depth):
    for content in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        for route in ROUTES:
            assert_answered(post(app_loop, route, content.encode()))
