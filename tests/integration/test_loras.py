"""Per-request LoRA adapters through the real Serve graph: the official openai SDK with
`loras` in extra_body on the shared app, and a second app ("loras", under /loras) whose
sd-tiny runs two replicas, where requests for an adapter set land on the replica that
holds it (read from the per-replica `lora_events` metric Ray tags with the replica).
Tiny adapters are random: the tests check equality, difference and placement."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import pixels
from tests.integration.conftest import integration_app_args
from tests.integration.test_observability import scrape

pytestmark = pytest.mark.integration

EVENTS = "ray_image_serving_lora_events_total"
# Serve's routers learn which replica holds a set from the controller, which the replica
# tells every 0.1 s; this leaves that far more than it needs on a slow machine.
ROUTING_NEWS_S = 5


def generate(openai_client, loras=None, seed=5):
    extra = {"steps": 2, "seed": seed}
    if loras is not None:
        extra["loras"] = loras
    result = openai_client.images.generate(
        model="sd-tiny", prompt="a teapot", size="64x64", extra_body=extra
    )
    return result.data[0].b64_json


def test_the_sdk_applies_adapters_and_scale_zero_is_the_base_model(openai_client):
    base = generate(openai_client)
    zero = generate(openai_client, [{"name": "ink-tiny", "scale": 0.0}])
    ink = generate(openai_client, [{"name": "ink-tiny", "scale": 1.0}])
    mixed = generate(
        openai_client, [{"name": "watercolor-tiny"}, {"name": "ink-tiny", "scale": 0.5}]
    )
    assert (pixels(zero) == pixels(base)).all()
    assert len({base, ink, mixed}) == 3
    # The same adapters and seed again: the same image.
    assert generate(openai_client, [{"name": "ink-tiny", "scale": 1.0}]) == ink


def test_the_catalog_routes_list_what_the_config_names(client):
    loras = {card["id"]: card for card in client.get("/v1/loras").json()["data"]}
    assert loras["ink-tiny"]["models"] == ["sd-tiny", "z-image-tiny"]
    assert client.get("/v1/models/z-image-tiny").json()["loras"] == ["ink-tiny"]


@pytest.fixture(scope="module")
def two_replicas(base_url, tiny_cache, tmp_path_factory) -> str:
    from ray import serve

    from serve_app.config import AppConfig
    from serve_app.graph import compose

    root = tmp_path_factory.mktemp("loras")
    args = integration_app_args(root, tiny_cache)
    args["models"] = [m for m in args["models"] if m["name"] == "sd-tiny"]
    replicas = {"sd-tiny": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1}}}
    serve.run(
        compose(AppConfig.model_validate(args), model_options=replicas),
        name="loras",
        route_prefix="/loras",
    )
    url = f"{base_url}/loras"
    deadline = time.monotonic() + 180
    while httpx.get(f"{url}/v1/health", timeout=60).json()["status"] != "ok":
        assert time.monotonic() < deadline, "the loras app did not get two healthy replicas"
        time.sleep(1)
    yield url
    serve.delete("loras")


def applied_by_replica(metrics_url: str, lora: str, expected: int) -> dict[str, float]:
    """Requests that applied `lora` in the loras app, per replica, once all are counted."""
    deadline = time.monotonic() + 60
    while True:
        counts: dict[str, float] = {}
        for labels, value in scrape(metrics_url).get(EVENTS, []):
            wanted = {"application": "loras", "lora": lora, "event": "applied"}
            if all(labels.get(k) == v for k, v in wanted.items()):
                counts[labels["replica"]] = counts.get(labels["replica"], 0) + value
        if sum(counts.values()) >= expected or time.monotonic() > deadline:
            return counts
        time.sleep(1)


def test_requests_for_an_adapter_go_to_the_replica_that_holds_it(two_replicas, metrics_url):
    def ask(lora: str, seed: int) -> None:
        body = {
            "model": "sd-tiny",
            "prompt": "a kettle",
            "size": "64x64",
            "steps": 2,
            "seed": seed,
            "loras": [{"name": lora}],
        }
        answer = httpx.post(f"{two_replicas}/v1/images/generations", json=body, timeout=120)
        assert answer.status_code == 200, answer.text

    def burst(lora: str, first_seed: int, count: int) -> dict[str, float]:
        """One request, time for the routers to hear who holds its set, then the rest."""
        ask(lora, first_seed)
        time.sleep(ROUTING_NEWS_S)
        for seed in range(first_seed + 1, first_seed + count):
            ask(lora, seed)
        placed = applied_by_replica(metrics_url, lora, count)
        assert sum(placed.values()) == count
        assert len(placed) == 1, f"{lora} requests spread over replicas: {placed}"
        return placed

    ink = burst("ink-tiny", 1, 9)
    # A second set goes to the replica holding fewer sets: the other one.
    watercolor = burst("watercolor-tiny", 20, 5)
    assert set(watercolor) != set(ink), (ink, watercolor)
