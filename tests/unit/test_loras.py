"""Per-request LoRA adapters: the replica's engine with the tiny Stable Diffusion and
tiny adapters saved and loaded like trained ones (scale 0 is the base model, adapters
change the image, mixed sets run in per-set groups that equal their solo runs, the
least recently used adapter goes when the K+1st comes), and the real app's door: every
way a request can name adapters wrongly gets a 4xx naming the field."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from serve_app.config import AppConfig
from serve_app.errors import ErrorCode
from serve_app.models.engine import ModelEngine
from serve_app.models.image_replica import ImageReplica
from serve_app.models.spec import AdapterUse, GenerationSpec
from tests.helpers import (
    assert_error,
    in_process_app,
    png_bytes,
    scratch_args,
    tiny_model_config,
)

ANONYMOUS = {"enabled": False, "allow_anonymous_on_loopback": True}


def adapter(seed: int, scale: float = 1.0) -> AdapterUse:
    return AdapterUse(f"tiny-{seed}", f"tiny:{seed}", None, scale)


def spec(seed=1, adapters=(), prompt="a red bicycle") -> GenerationSpec:
    return GenerationSpec(prompt, None, 64, 64, 2, 5.0, (seed,), adapters=tuple(adapters))


@pytest.fixture(scope="module")
def engine(tiny_cache) -> ModelEngine:
    config = tiny_model_config(
        "stable-diffusion", batching={"max_batch_size": 8}, adapters={"max_loaded": 2}
    )
    return ModelEngine(config, tiny_cache)


def image(engine: ModelEngine, request: GenerationSpec) -> np.ndarray:
    result = engine.run_batch([request])[0]
    assert not isinstance(result, Exception), result
    return result.pixels[0]


def test_scale_zero_is_the_base_model_and_adapters_change_the_image(engine):
    base = image(engine, spec())
    assert np.array_equal(image(engine, spec(adapters=[adapter(1, 0.0)])), base)
    one = image(engine, spec(adapters=[adapter(1)]))
    two = image(engine, spec(adapters=[adapter(2)]))
    both = image(engine, spec(adapters=[adapter(1), adapter(2, 0.5)]))
    assert len({a.tobytes() for a in (base, one, two, both)}) == 4
    # Without adapters again: exactly the base model (they are switched off, not merged).
    assert np.array_equal(image(engine, spec()), base)
    assert np.array_equal(image(engine, spec(adapters=[adapter(1)])), one)


def test_a_mixed_burst_runs_in_per_set_groups_that_equal_solo_runs(engine):
    burst = [
        spec(11, [adapter(1)]),
        spec(12, []),
        spec(13, [adapter(1)]),
        spec(14, [adapter(2, 0.7)]),
        spec(15, []),
    ]
    together = engine.run_batch(burst)
    assert [r.batch_images for r in together] == [2, 2, 2, 1, 2]
    for request, batched in zip(burst, together, strict=True):
        solo = image(engine, request)
        assert np.abs(batched.pixels[0].astype(int) - solo).max() <= 1


def test_the_k_plus_first_adapter_evicts_the_least_recently_used(engine):
    image(engine, spec(adapters=[adapter(1)]))
    first = image(engine, spec(adapters=[adapter(2)]))
    assert engine.health()["loras"] == ["tiny-1", "tiny-2"]
    image(engine, spec(adapters=[adapter(1)]))  # 1 is now the most recent
    image(engine, spec(adapters=[adapter(3)]))
    assert engine.health()["loras"] == ["tiny-1", "tiny-3"]
    assert engine.adapters.evictions >= 1
    # Loaded again from its file, adapter 2 makes the same image.
    assert np.array_equal(image(engine, spec(adapters=[adapter(2)])), first)
    assert engine.health()["loras"] == ["tiny-3", "tiny-2"]


def test_a_set_larger_than_the_replica_holds_keeps_its_own_members(engine):
    """Two adapters on a replica that holds two: loading the second must not evict the
    first of the same request."""
    result = engine.run_batch([spec(adapters=[adapter(4), adapter(5)])])[0]
    assert not isinstance(result, Exception)
    assert sorted(engine.health()["loras"]) == ["tiny-4", "tiny-5"]


def test_an_adapter_that_does_not_load_fails_its_group_only(engine, tmp_path):
    broken = AdapterUse("broken", str(tmp_path / "missing"), None, 1.0)
    failed, fine = engine.run_batch([spec(21, [broken]), spec(22)])
    assert getattr(failed, "code", None) == ErrorCode.LORA_UNAVAILABLE
    assert not isinstance(fine, Exception)
    assert np.array_equal(fine.pixels[0], image(engine, spec(22)))


# --- the door ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_cache) -> AppConfig:
    root = tmp_path_factory.mktemp("loras")
    args = scratch_args(root, tiny_cache, auth=ANONYMOUS, rate_limits={"enabled": False})
    for model in args["models"]:
        if model["name"] == "sd-tiny":
            model["adapters"] = {"max_per_request": 2, "max_scale": 1.5}
            model["result_cache"] = True
    args["loras"].append({"name": "pix-style", "path": "tiny:3", "models": ["pix2pix-tiny"]})
    return AppConfig.model_validate(args)


@pytest.fixture
async def http(config, tiny_cache):
    replica = ImageReplica(ModelEngine(config.model("sd-tiny"), tiny_cache))
    app = in_process_app(config, {"sd-tiny": replica})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        yield client


BODY = {"model": "sd-tiny", "prompt": "a cup", "size": "64x64", "steps": 2, "seed": 3}


async def test_the_catalog_lists_adapters_and_models_name_theirs(http):
    listing = (await http.get("/v1/loras")).json()
    assert {card["id"]: card["models"] for card in listing["data"]} == {
        "ink-tiny": ["sd-tiny", "z-image-tiny"],
        "watercolor-tiny": ["sd-tiny"],
        "pix-style": ["pix2pix-tiny"],
    }
    card = (await http.get("/v1/models/sd-tiny")).json()
    assert card["loras"] == ["ink-tiny", "watercolor-tiny"]
    assert card["capabilities"]["supports_adapters"] is True
    models = {c["id"]: c for c in (await http.get("/v1/models")).json()["data"]}
    assert models["glm-4.6v-tiny"]["loras"] == []


async def test_a_request_with_adapters_is_served_and_cached_with_them(http):
    plain = await http.post("/v1/images/generations", json=BODY)
    body = {**BODY, "loras": [{"name": "ink-tiny", "scale": 0.8}]}
    styled = await http.post("/v1/images/generations", json=body)
    again = await http.post("/v1/images/generations", json=body)
    zero = await http.post(
        "/v1/images/generations", json={**BODY, "loras": [{"name": "ink-tiny", "scale": 0}]}
    )
    assert [r.status_code for r in (plain, styled, again, zero)] == [200] * 4, styled.text
    assert styled.json()["data"][0]["b64_json"] != plain.json()["data"][0]["b64_json"]
    # The adapter set is part of the cache key: no answer from the plain request's entry.
    assert (styled.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert zero.headers["x-cache"] == "miss"


@pytest.mark.parametrize(
    "loras, status, code, param",
    [
        ([{"name": "nope"}], 404, "lora_not_found", "loras[0].name"),
        (
            [{"name": "ink-tiny"}, {"name": "pix-style"}],
            400,
            "lora_model_mismatch",
            "loras[1].name",
        ),
        ([{"name": "ink-tiny", "scale": 1.6}], 400, "invalid_lora_scale", "loras[0].scale"),
        ([{"name": "ink-tiny", "scale": -2}], 400, "invalid_lora_scale", "loras[0].scale"),
        ([{"name": "ink-tiny"}, {"name": "ink-tiny"}], 400, "invalid_parameter", "loras[1].name"),
        (
            [{"name": "ink-tiny"}, {"name": "watercolor-tiny"}, {"name": "ink-tiny"}],
            400,
            "too_many_loras",
            "loras",
        ),
        ([{"name": "ink-tiny", "scale": "1"}], 400, None, None),
        ([{"name": "ink-tiny", "weight": 1}], 400, None, None),
        ("ink-tiny", 400, None, None),
    ],
)
async def test_adapters_named_wrongly_get_a_4xx_naming_the_field(http, loras, status, code, param):
    answer = await http.post("/v1/images/generations", json={**BODY, "loras": loras})
    assert_error(answer, status, code, param)


async def test_an_adapter_for_another_model_or_a_family_without_adapters_is_refused(http):
    other_model = await http.post(
        "/v1/images/generations",
        json={**BODY, "model": "z-image-tiny", "loras": [{"name": "watercolor-tiny"}]},
    )
    assert_error(other_model, 400, "lora_model_mismatch", "loras[0].name")
    picture = "data:image/png;base64," + base64.b64encode(png_bytes(64, 64)).decode()
    no_adapters = await http.post(
        "/v1/images/edits",
        json={
            "model": "longcat-edit-tiny",
            "prompt": "x",
            "images": [{"image_url": picture}],
            "loras": [{"name": "ink-tiny"}],
        },
    )
    assert_error(no_adapters, 400, "unsupported_parameter", "loras")


async def test_a_multipart_edit_carries_adapters_as_json_text(http):
    files = {"image": ("a.png", png_bytes(64, 64), "image/png")}
    fields = {"model": "pix2pix-tiny", "prompt": "x", "loras": json.dumps([{"name": "nope"}])}
    answer = await http.post("/v1/images/edits", data=fields, files=files)
    assert_error(answer, 404, "lora_not_found", "loras[0].name")
    fields["loras"] = "[not json"
    assert_error(await http.post("/v1/images/edits", data=fields, files=files), 400)


async def test_a_job_with_a_bad_adapter_is_refused_at_submission(http):
    request = {**BODY, "loras": [{"name": "nope"}]}
    answer = await http.post("/v1/jobs", json={"type": "image_generation", "request": request})
    assert_error(answer, 404, "lora_not_found")
