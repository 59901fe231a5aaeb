"""The result cache: its key covers what shapes the images (and the tenant), its stores
keep their bounds (in memory, and in the real Redis), and through the real app with the
tiny sd model an exact repeat of a seeded request is a hit with the same bytes and no
pipeline call, while unseeded, streamed or different requests go to the model."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from serve_app.api.app import create_app, gateway_parts
from serve_app.config import AppConfig, ModelConfig
from serve_app.models.engine import ModelEngine
from serve_app.models.image_replica import ImageReplica
from serve_app.models.spec import EditSpec, GeneratedImage, GenerationResult, GenerationSpec
from serve_app.observability.metrics import RESULT_CACHE, InMemorySink, ServiceMetrics
from serve_app.prompts import PromptCatalog
from serve_app.service.backends import CatalogPrompts
from serve_app.service.job_execution import JobExecutor
from serve_app.service.result_cache import (
    LocalResults,
    RedisResults,
    decode_result,
    encode_result,
    result_key,
)
from tests.helpers import in_process_app, scratch_args
from tests.security_fixtures import REDIS_URL, closed_port

ANONYMOUS = {"enabled": False, "allow_anonymous_on_loopback": True}
SPEC = GenerationSpec(
    prompt="a cup", negative_prompt=None, width=64, height=64, steps=2, guidance_scale=5.0,
    seeds=(7,),
)  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_cache) -> AppConfig:
    root = tmp_path_factory.mktemp("result-cache")
    args = scratch_args(root, tiny_cache, auth=ANONYMOUS, rate_limits={"enabled": False})
    for model in args["models"]:
        if model["name"] == "sd-tiny":
            model["result_cache"] = True
    return AppConfig.model_validate(args)


def sd(config: AppConfig):
    return config.model("sd-tiny")


# --- the key ---------------------------------------------------------------------------


def test_the_key_covers_what_shapes_the_images_and_nothing_else(config):
    model = sd(config)
    key = result_key(model, SPEC, "acme")
    assert result_key(model, SPEC, "acme") == key
    # Where the images go and how progress is reported do not change them.
    assert result_key(model, replace(SPEC, job_id="job_1", partial_images=2), "acme") == key
    assert result_key(model.model_copy(update={"description": "x"}), SPEC, "acme") == key
    changed = [
        replace(SPEC, prompt="a mug"),
        replace(SPEC, negative_prompt="blur"),
        replace(SPEC, width=128),
        replace(SPEC, steps=3),
        replace(SPEC, guidance_scale=4.5),
        replace(SPEC, seeds=(8,)),
        replace(SPEC, seeds=(7, 8)),
        replace(SPEC, output_format="webp"),
        replace(SPEC, output_compression=80),
    ]
    keys = {result_key(model, spec, "acme") for spec in changed}
    assert key not in keys and len(keys) == len(changed)
    assert result_key(model, SPEC, "other") != key
    assert result_key(model, SPEC, None) not in (key, result_key(model, SPEC, "other"))
    assert result_key(model.model_copy(update={"path": "/elsewhere"}), SPEC, "acme") != key


def test_an_edit_key_covers_its_pictures_by_content():
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    edit = EditSpec(
        prompt="blue", negative_prompt=None, images=(picture,), mask=None, steps=2,
        guidance_scale=5.0, image_guidance_scale=1.5, seeds=(1,),
    )  # fmt: skip
    model = ModelConfig(name="pix", family="instruct-pix2pix", path="tiny:instruct-pix2pix")
    key = result_key(model, edit, "acme")
    assert result_key(model, replace(edit, images=(picture.copy(),)), "acme") == key
    other = picture.copy()
    other[0, 0, 0] = 1
    assert result_key(model, replace(edit, images=(other,)), "acme") != key
    assert result_key(model, replace(edit, mask=np.full((64, 64), 255, np.uint8)), "acme") != key
    assert result_key(model, replace(edit, image_guidance_scale=2.0), "acme") != key


def test_results_round_trip_as_json():
    result = GenerationResult([GeneratedImage(b"\x89PNG..", 7, 64, 64)], batch_images=4)
    value = encode_result(result)
    assert value.startswith(b"{")
    back = decode_result(value)
    assert back.images == result.images and (back.batch_images, back.cache) == (0, "hit")


# --- the stores ----------------------------------------------------------------------------


async def test_memory_keeps_its_byte_bound_oldest_first_and_its_age():
    now = [0.0]
    store = LocalResults(max_bytes=10, ttl_s=60, clock=lambda: now[0])
    await store.put("a", b"1234")
    await store.put("b", b"5678")
    await store.put("c", b"90ab")  # 12 bytes: "a" goes
    assert [await store.get(k) for k in "abc"] == [None, b"5678", b"90ab"]
    assert store.used == 8
    await store.put("b", b"xy")  # replaced, counted once
    assert store.used == 6 and await store.get("b") == b"xy"
    now[0] = 61
    assert await store.get("c") is None


@pytest.fixture
def redis_prefix():
    import redis

    prefix = "test-results-" + secrets.token_hex(6)
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter("{" + prefix + "}*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_redis_keeps_its_byte_bound_oldest_first_and_its_age(redis_prefix):
    store = RedisResults(REDIS_URL, redis_prefix, max_bytes=10, ttl_s=60)
    await store.put("a", b"1234")
    await store.put("b", b"5678")
    await store.put("b", b"5678")  # counted once
    await store.put("c", b"90ab")  # 12 bytes: "a" goes
    assert [await store.get(k) for k in "abc"] == [None, b"5678", b"90ab"]
    assert int(await store.client.get(store.total)) == 8
    assert await store.client.zcard(store.index) == 2
    short = RedisResults(REDIS_URL, redis_prefix + "-short", max_bytes=100, ttl_s=0.2)
    await short.put("x", b"12")
    await asyncio.sleep(0.5)
    assert await short.get("x") is None
    await short.put("y", b"34")  # the expired entry stops being counted
    assert int(await short.client.get(short.total)) == 2
    await store.client.aclose()
    await short.client.aclose()


# --- through the app --------------------------------------------------------------------------


class CountingReplica:
    """The real replica, counting the pipeline calls it is asked for."""

    def __init__(self, replica: ImageReplica):
        self.replica = replica
        self.calls = 0

    async def run(self, spec):
        self.calls += 1
        return await self.replica.run(spec)

    async def stream(self, spec):
        self.calls += 1
        async for item in self.replica.stream(spec):
            yield item

    async def health(self):
        return await self.replica.health()


def app_for(config: AppConfig, tiny_cache, sink: InMemorySink | None = None):
    replica = CountingReplica(ImageReplica(ModelEngine(sd(config), tiny_cache)))
    metrics = ServiceMetrics(sink) if sink is not None else None
    app = in_process_app(config, {"sd-tiny": replica}, metrics=metrics)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1"), replica


BODY = {"model": "sd-tiny", "prompt": "a cup", "size": "64x64", "steps": 2, "seed": 11}


async def test_an_exact_repeat_of_a_seeded_request_is_a_hit_without_a_pipeline_call(
    config, tiny_cache
):
    sink = InMemorySink()
    http, replica = app_for(config, tiny_cache, sink)
    async with http:
        card = (await http.get("/v1/models/sd-tiny")).json()
        assert card["capabilities"]["result_cache"] is True
        first = await http.post("/v1/images/generations", json=BODY)
        again = await http.post("/v1/images/generations", json=BODY)
        assert replica.calls == 1
        other_seed = await http.post("/v1/images/generations", json={**BODY, "seed": 12})
        webp = await http.post("/v1/images/generations", json={**BODY, "output_format": "webp"})
        unseeded = {k: v for k, v in BODY.items() if k != "seed"}
        random = [await http.post("/v1/images/generations", json=unseeded) for _ in range(2)]
        streamed = await http.post("/v1/images/generations", json={**BODY, "stream": True})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert again.headers["x-batch-images"] == "0"
    assert again.json()["data"] == first.json()["data"]  # the same bytes, seed and prompt
    assert (other_seed.headers["x-cache"], webp.headers["x-cache"]) == ("miss", "miss")
    assert other_seed.json()["data"][0]["b64_json"] != first.json()["data"][0]["b64_json"]
    # Nothing is kept of a request whose seed was drawn at random, or of a stream.
    assert ["x-cache" in answer.headers for answer in random] == [False, False]
    assert streamed.status_code == 200 and "x-cache" not in streamed.headers
    assert replica.calls == 1 + 2 + 2 + 1
    outcomes = [tags["outcome"] for _, tags in sink.observations[RESULT_CACHE.name]]
    assert outcomes.count("hit") == 1 and outcomes.count("stored") == 3


async def test_replicas_sharing_redis_share_results(tmp_path: Path, tiny_cache, redis_prefix):
    args = scratch_args(
        tmp_path,
        tiny_cache,
        auth=ANONYMOUS,
        rate_limits={"enabled": False, "redis_url": REDIS_URL},
        result_cache={"key_prefix": redis_prefix},
    )
    for model in args["models"]:
        if model["name"] == "sd-tiny":
            model["result_cache"] = True
    config = AppConfig.model_validate(args)
    one, first_replica = app_for(config, tiny_cache)
    two, second_replica = app_for(config, tiny_cache)
    async with one, two:
        made = await one.post("/v1/images/generations", json=BODY)
        shared = await two.post("/v1/images/generations", json=BODY)
    assert (made.headers["x-cache"], shared.headers["x-cache"]) == ("miss", "hit")
    assert shared.json()["data"] == made.json()["data"]
    assert (first_replica.calls, second_replica.calls) == (1, 0)


async def test_an_unreachable_redis_is_a_miss_not_a_failure(tmp_path: Path, tiny_cache):
    args = scratch_args(
        tmp_path,
        tiny_cache,
        auth=ANONYMOUS,
        rate_limits={"enabled": False, "redis_url": f"redis://127.0.0.1:{closed_port()}/0"},
    )
    for model in args["models"]:
        if model["name"] == "sd-tiny":
            model["result_cache"] = True
    sink = InMemorySink()
    http, replica = app_for(AppConfig.model_validate(args), tiny_cache, sink)
    async with http:
        answers = [await http.post("/v1/images/generations", json=BODY) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert replica.calls == 2
    assert sink.values(RESULT_CACHE, model="sd-tiny", outcome="error") == [1, 1, 1, 1]


async def test_a_seeded_job_repeating_a_request_is_answered_from_the_cache(config, tiny_cache):
    """Jobs go through the same cache: a job whose request repeats a seeded one ends with
    the same image, stored under the job's keys, and no pipeline call."""
    replica = CountingReplica(ImageReplica(ModelEngine(sd(config), tiny_cache)))
    prompts = CatalogPrompts(PromptCatalog.from_yaml(Path(config.templates_path)))
    parts = gateway_parts(config, prompts, {"sd-tiny": replica})
    transport = httpx.ASGITransport(app=create_app(parts))
    body = {**BODY, "seed": 21}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        sync = await http.post("/v1/images/generations", json=body)
        created = await http.post("/v1/jobs", json={"type": "image_generation", "request": body})
    assert created.status_code == 202, created.text
    (job,) = parts.jobs.store.claim_jobs("w1", limit=1, lease_s=60)
    result = await JobExecutor(parts.images).execute(job)
    assert replica.calls == 1
    made = base64.b64decode(sync.json()["data"][0]["b64_json"])
    assert result["images"][0]["sha256"] == hashlib.sha256(made).hexdigest()
    assert result["images"][0]["key"] == f"jobs/{job.id}/0.png"
