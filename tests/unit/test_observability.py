"""Metrics, access log and GPU report in-process (no Ray Serve): a real tiny model behind
the real FastAPI app, an in-memory metric sink and a logging handler that formats
records the way Serve's JSON log encoding does."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ray._common.formatters import JSONFormatter  # Serve's formatter for encoding: JSON

from serve_app.config import AppConfig
from serve_app.models.engine import ModelEngine
from serve_app.models.spec import GenerationResult, GenerationSpec
from serve_app.observability.access_log import prompt_excerpt
from serve_app.observability.gpu import gpu_report
from serve_app.observability.metrics import (
    BATCH_IMAGES,
    GPU_UTILIZATION,
    IMAGES_GENERATED,
    METRICS,
    REQUEST_ERRORS,
    STAGE_SECONDS,
    InMemorySink,
    ServiceMetrics,
)
from serve_app.security.key_store import KeyStore
from serve_app.security.keys import KeyHasher, pepper_from_environment
from serve_app.security.scopes import SCOPES
from tests.helpers import TEMPLATES, in_process_app
from tests.unit.test_engine import tiny_sd

REPO = Path(__file__).resolve().parents[2]
PEPPER_ENV = "OBSERVABILITY_TEST_KEY_PEPPER"
EXTRA_KEY = "ray_serve_extra_fields"  # Serve flattens this key into JSON log lines


class LocalModel:
    """The replica's job without Ray: one request per pipeline call."""

    def __init__(self, engine: ModelEngine):
        self.engine = engine

    async def run(self, spec):
        result = self.engine.run_batch([spec])[0]
        if isinstance(result, Exception):
            raise result
        return GenerationResult(self.engine.encode(spec, result), result.batch_images)

    async def health(self):
        return self.engine.health()


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_cache) -> AppConfig:
    root = tmp_path_factory.mktemp("observability")
    return AppConfig.model_validate(
        {
            "models": [tiny_sd()],
            "templates_path": str(TEMPLATES),
            "tiny_model_cache": str(tiny_cache),
            "storage": {"root": str(root / "images")},
            "jobs": {"store_url": f"sqlite:///{root / 'jobs.sqlite3'}"},
            "auth": {
                "enabled": True,
                "database_url": f"sqlite:///{root / 'keys.db'}",
                "pepper_env": PEPPER_ENV,
            },
        }
    )


@pytest.fixture(scope="module")
def sink() -> InMemorySink:
    return InMemorySink()


@pytest.fixture(scope="module")
def engine(config, sink) -> ModelEngine:
    engine = ModelEngine(config.models[0], Path(config.tiny_model_cache), ServiceMetrics(sink))
    engine.warmup()
    return engine


@pytest.fixture(scope="module")
def log_stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture(scope="module")
def http(config, sink, engine, log_stream):
    # Real keys: one for the default tenant that every test sends, one for acme.
    os.environ[PEPPER_ENV] = "observability-unit-test-pepper"
    keys = KeyStore.open(config.auth.database_url, KeyHasher(pepper_from_environment(PEPPER_ENV)))
    default_key = keys.create_key("default", "tests", SCOPES).key
    acme_key = keys.create_key("acme", "tests", SCOPES).key
    acme_chat_key = keys.create_key("acme", "chat only", ["chat"]).key
    logger = logging.getLogger("test.observability.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(log_stream)
    handler.setFormatter(JSONFormatter())
    logger.addHandler(handler)
    app = in_process_app(
        config,
        {"sd-unit": LocalModel(engine)},
        metrics=ServiceMetrics(sink),
        access_logger=logger,
        access_log_extra_key=EXTRA_KEY,
    )

    headers = {"Authorization": f"Bearer {default_key}"}
    with TestClient(app, headers=headers) as client:
        client.acme_key = acme_key
        client.acme_chat_key = acme_chat_key
        client.default_key = default_key
        yield client
    logger.removeHandler(handler)
    del os.environ[PEPPER_ENV]


def access_lines(stream: io.StringIO, request_id: str) -> list[tuple[str, dict]]:
    return [
        (line, json.loads(line)) for line in stream.getvalue().splitlines() if request_id in line
    ]


def test_catalog_names_are_unique_and_avoid_serve_reserved_tags():
    names = [spec.name for spec in METRICS]
    assert len(names) == len(set(names))
    for spec in METRICS:
        assert spec.name.startswith("image_serving_")
        assert not {"deployment", "replica", "application"} & set(spec.tag_keys)
        assert (spec.kind == "histogram") == bool(spec.boundaries)
    assert IMAGES_GENERATED.prometheus_names == ("ray_image_serving_images_generated_total",)
    assert "ray_image_serving_batch_images_bucket" in BATCH_IMAGES.prometheus_names


def test_warm_up_is_not_counted_and_each_call_records_its_batch(config, sink, engine):
    # The module's engine has warmed up already: no image counted yet.
    assert sink.values(IMAGES_GENERATED) == []
    specs = [
        GenerationSpec("a", None, 64, 64, 2, 5.0, (1, 2)),
        GenerationSpec("b", None, 128, 64, 2, 5.0, (3,)),
        GenerationSpec("c", None, 64, 64, 2, 5.0, (4,)),
    ]
    results = engine.run_batch(specs)
    assert sorted(sink.values(BATCH_IMAGES, model="sd-unit")) == [1, 3]
    assert sum(sink.values(IMAGES_GENERATED, model="sd-unit", task="text-to-image")) == 4
    assert len(sink.values(STAGE_SECONDS, stage="model", model="sd-unit")) == 2
    engine.encode(specs[0], results[0])
    [encode_seconds] = sink.values(STAGE_SECONDS, stage="encode", model="sd-unit")
    assert encode_seconds > 0


def test_access_line_is_one_json_object_without_secrets(http, log_stream, sink):
    prompt = "a ceramic mug on an oak desk, morning light, " * 5
    response = http.post(
        "/v1/images/generations",
        headers={"Authorization": f"Bearer {http.default_key}", "x-request-id": "unit-gen-1"},
        json={"model": "sd-unit", "prompt": prompt, "n": 2, "size": "64x64", "seed": 9},
    )
    assert response.status_code == 200, response.text
    images = [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]

    [(line, entry)] = access_lines(log_stream, "unit-gen-1")
    assert entry["event"] == "access"
    assert entry["request_id"] == "unit-gen-1"
    assert entry["tenant"] == "default"
    assert (entry["method"], entry["route"], entry["status"]) == (
        "POST",
        "/v1/images/generations",
        200,
    )
    assert entry["model"] == "sd-unit"
    assert entry["images"] == 2 and entry["batch_images"] == 2
    assert entry["image_sha256"] == [hashlib.sha256(image).hexdigest() for image in images]
    assert entry["prompt"] == prompt[:80] + "…"
    assert entry["error_code"] is None
    assert entry["message"].startswith("POST /v1/images/generations 200")
    assert http.default_key not in line and "authorization" not in line.lower()
    assert response.json()["data"][0]["b64_json"][:40] not in line
    # The Gateway's own stages were timed too.
    for stage in ("template", "store"):
        assert sink.values(STAGE_SECONDS, stage=stage, model="sd-unit"), stage


def test_errors_are_counted_by_route_status_and_code(http, log_stream, sink):
    response = http.post(
        "/v1/images/generations",
        headers={"x-request-id": "unit-err-1"},
        json={"model": "sd-unit", "prompt": "x", "n": 9},
    )
    assert response.status_code == 400
    [(_, entry)] = access_lines(log_stream, "unit-err-1")
    assert entry["status"] == 400 and entry["error_code"] == "invalid_n"
    assert sink.values(
        REQUEST_ERRORS, route="/v1/images/generations", status="400", code="invalid_n"
    ) == [1]


def test_unmatched_paths_share_one_metric_label(http, log_stream, sink):
    response = http.get("/v1/does-not-exist/12345", headers={"x-request-id": "unit-404-1"})
    assert response.status_code == 404
    [(_, entry)] = access_lines(log_stream, "unit-404-1")
    assert entry["route"] == "/v1/does-not-exist/12345"
    assert sink.values(REQUEST_ERRORS, route="unmatched", status="404") == [1]


def test_route_templates_not_ids_label_the_errors(http, sink):
    assert http.get("/v1/models/missing-model").status_code == 404
    assert sink.values(REQUEST_ERRORS, route="/v1/models/{model_id}", code="model_not_found")


def test_tenant_comes_from_the_principal(http, log_stream):
    response = http.get(
        "/v1/models",
        headers={"x-request-id": "unit-ten-1", "Authorization": f"Bearer {http.acme_key}"},
    )
    assert response.status_code == 200
    [(_, entry)] = access_lines(log_stream, "unit-ten-1")
    assert entry["tenant"] == "acme"
    assert entry["model"] is None and entry["images"] == 0


def test_a_valid_key_refused_at_the_door_is_logged_under_its_tenant(http, log_stream):
    response = http.post(
        "/v1/images/generations",
        json={"model": "sd-unit", "prompt": "x"},
        headers={"x-request-id": "unit-ten-2", "Authorization": f"Bearer {http.acme_chat_key}"},
    )
    assert response.status_code == 403
    [(_, entry)] = access_lines(log_stream, "unit-ten-2")
    assert entry["tenant"] == "acme" and entry["error_code"] == "insufficient_scope"


def test_prompt_excerpt_limits():
    assert prompt_excerpt("short", 80) == "short"
    assert prompt_excerpt("x" * 100, 10) == "x" * 10 + "…"
    assert prompt_excerpt("anything", 0) is None
    assert prompt_excerpt(None, 80) is None


def test_cpu_models_report_no_gpu(engine):
    assert gpu_report("cpu") is None
    assert engine.health()["gpu"] is None


def test_gpu_gauges_from_a_report():
    sink = InMemorySink()
    report = {
        "index": 0,
        "name": "card",
        "memory": {
            "allocated_bytes": 10,
            "reserved_bytes": 20,
            "free_bytes": 70,
            "total_bytes": 100,
        },
        "utilization_percent": 42.0,
    }
    ServiceMetrics(sink).gpu("m", report)
    assert sink.observations["image_serving_gpu_memory_bytes"] == [
        (10, {"model": "m", "kind": "allocated"}),
        (20, {"model": "m", "kind": "reserved"}),
        (70, {"model": "m", "kind": "free"}),
        (100, {"model": "m", "kind": "total"}),
    ]
    assert sink.values(GPU_UTILIZATION, model="m") == [42.0]
