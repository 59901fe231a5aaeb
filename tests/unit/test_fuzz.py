"""Hostile input, generated (hypothesis): the image decoder with random bytes, mutated
valid PNG/JPEG/WebP files and headers claiming extreme sizes; every JSON route of the real
FastAPI app (a tiny sd model behind it, in this process) with arbitrary JSON, near-valid
bodies with one field replaced, and raw bytes. Whatever comes in: a 2xx, or a 4xx in the
error envelope; never a 5xx, never another exception."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from serve_app.config import AppConfig
from serve_app.errors import ServiceError
from serve_app.images import ImageLimits, decode_image
from serve_app.models.engine import ModelEngine
from serve_app.models.image_replica import ImageReplica
from tests.helpers import in_process_app, scratch_args

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=4_000_000, max_side=4096)
FUZZ = settings(
    max_examples=120,
    deadline=None,  # CI machines are slow; the limits, not the clock, are under test
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def sample(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((24, 16)).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


SAMPLES = {fmt: sample(fmt) for fmt in ("PNG", "JPEG", "WEBP")}


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


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))])
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
            if not data:
                break
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[at : at + draw(st.integers(1, 32))] = b"\0" * 32
    return bytes(data)


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


# --- every JSON route of the real app ------------------------------------------------------

ROUTES = (
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/jobs",
    "/v1/batches",
    "/v1/chat/completions",
)
VALID = {
    "/v1/images/generations": {"model": "sd-tiny", "prompt": "a chair", "size": "64x64"},
    "/v1/images/edits": {
        "model": "sd-tiny",
        "prompt": "blue",
        "images": [{"b64_json": "aGVsbG8="}],
    },
    "/v1/jobs": {
        "type": "image_generation",
        "request": {"model": "sd-tiny", "prompt": "a chair", "size": "64x64"},
    },
    "/v1/batches": {
        "jobs": [
            {
                "type": "image_generation",
                "request": {"model": "sd-tiny", "prompt": "a chair", "size": "64x64"},
            }
        ]
    },
    "/v1/chat/completions": {"model": "sd-tiny", "messages": [{"role": "user", "content": "hi"}]},
}
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "\0", "{prompt}", "{0.__class__}", "%s%n", "\u202e", "64x64x64"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)


@st.composite
def near_valid(draw) -> tuple[str, dict]:
    """A valid body of some route with one field replaced (or added) by any JSON value."""
    route = draw(st.sampled_from(ROUTES))
    body = json.loads(json.dumps(VALID[route]))
    target = body["request"] if route == "/v1/jobs" else body
    field = draw(st.sampled_from([*target, "n", "seed", "steps", "style", "variables", "x"]))
    target[field] = draw(JSON_VALUES)
    return route, body


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
