"""Access logs, metrics and health of the running application, read where ops read them:
the Gateway replica's Serve log file and Ray's Prometheus endpoint."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

API_KEY = "sk-observability-secret-0123456789"
LONG_PROMPT = "a walnut desk lamp on a marble table, soft window light, " * 4


def access_entries(log_dir: Path, request_id: str, timeout_s: float = 30) -> list[dict]:
    """The Gateway's access-log lines for one request id, waiting for the file to flush."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = []
        for path in log_dir.glob("replica_images_Gateway_*.log"):
            for line in path.read_text().splitlines():
                if request_id in line and '"event": "access"' in line:
                    entries.append((line, json.loads(line)))
        if entries or time.monotonic() > deadline:
            return entries
        time.sleep(0.5)


def log_lines(log_dir: Path, deployment: str, text: str, timeout_s: float = 30) -> list[dict]:
    """JSON lines of a deployment's replica logs that contain `text`."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = [
            json.loads(line)
            for path in log_dir.glob(f"replica_images_{deployment}_*.log")
            for line in path.read_text().splitlines()
            if text in line
        ]
        if entries or time.monotonic() > deadline:
            return entries
        time.sleep(0.5)


def test_the_services_own_lines_reach_the_replica_logs_as_json(client, serve_log_dir):
    """Not only Serve's lines and the access log: the service's own loggers too."""
    (gateway, *_) = log_lines(serve_log_dir, "Gateway", "rate limits")
    assert gateway["message"].startswith("API keys ")
    assert (gateway["levelname"], gateway["deployment"]) == ("INFO", "images_Gateway")
    (runner, *_) = log_lines(serve_log_dir, "JobRunner", "job runner")
    assert runner["message"].endswith(" started")
    assert (runner["levelname"], runner["deployment"]) == ("INFO", "images_JobRunner")


def scrape(metrics_url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Series name -> [(labels, value)] from the Prometheus text format."""
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    text = httpx.get(metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, []).append((sample.labels, sample.value))
    return series


def total(series, name: str, **labels: str) -> float:
    return sum(
        value
        for seen, value in series.get(name, [])
        if all(seen.get(k) == v for k, v in labels.items())
    )


def test_one_json_access_line_per_request_without_secrets(client, serve_log_dir):
    response = client.post(
        "/v1/images/generations",
        headers={"Authorization": f"Bearer {API_KEY}", "x-request-id": "obs-gen-1"},
        json={"model": "sd-tiny", "prompt": LONG_PROMPT, "n": 2, "size": "64x64", "steps": 2},
    )
    assert response.status_code == 200, response.text
    images = [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]

    entries = access_entries(serve_log_dir, "obs-gen-1")
    assert len(entries) == 1
    line, entry = entries[0]
    assert entry["request_id"] == "obs-gen-1"
    assert entry["tenant"] == "default"
    assert entry["route"] == "/v1/images/generations"
    assert entry["model"] == "sd-tiny"
    assert entry["status"] == 200
    assert entry["latency_ms"] > 0
    assert entry["images"] == 2
    assert entry["batch_images"] >= 2
    assert entry["image_sha256"] == [hashlib.sha256(image).hexdigest() for image in images]
    assert entry["prompt"] == LONG_PROMPT[:80] + "…"
    # Serve's own fields sit next to ours: which replica wrote the line.
    assert entry["deployment"].endswith("Gateway") and entry["replica"]
    assert API_KEY not in line and "authorization" not in line.lower()
    assert response.json()["data"][0]["b64_json"][:40] not in line


def test_access_line_of_a_refused_request_has_its_error_code(client, serve_log_dir):
    response = client.post(
        "/v1/images/generations",
        headers={"x-request-id": "obs-err-1"},
        json={"model": "no-such-model", "prompt": "x"},
    )
    assert response.status_code == 404
    [(_, entry)] = access_entries(serve_log_dir, "obs-err-1")
    assert entry["status"] == 404
    assert entry["error_code"] == "model_not_found"
    assert entry["model"] == "no-such-model"
    assert entry["images"] == 0 and entry["image_sha256"] == []


def test_prometheus_endpoint_has_the_service_metrics(client, metrics_url):
    ok = client.post(
        "/v1/images/generations",
        json={"model": "sd-tiny", "prompt": "metrics", "n": 3, "size": "64x64", "steps": 2},
    )
    assert ok.status_code == 200
    assert (
        client.post("/v1/images/generations", json={"model": "nope", "prompt": "x"}).status_code
        == 404
    )

    deadline = time.monotonic() + 60
    while True:
        series = scrape(metrics_url)
        errors = total(
            series,
            "ray_image_serving_request_errors_total",
            route="/v1/images/generations",
            status="404",
            code="model_not_found",
        )
        images = total(
            series,
            "ray_image_serving_images_generated_total",
            model="sd-tiny",
            task="text-to-image",
        )
        if (errors >= 1 and images >= 3) or time.monotonic() > deadline:
            break
        time.sleep(1)

    assert images >= 3
    assert errors >= 1
    assert total(series, "ray_image_serving_batch_images_count", model="sd-tiny") >= 1
    # The 3-image request formed a batch of at least 3: its bucket le=2 misses it.
    assert total(series, "ray_image_serving_batch_images_sum", model="sd-tiny") >= 3
    assert total(series, "ray_image_serving_queue_wait_seconds_count", model="sd-tiny") >= 1
    for stage in ("template", "model", "encode", "store"):
        count = total(series, "ray_image_serving_stage_seconds_count", stage=stage, model="sd-tiny")
        assert count >= 1, stage
        assert total(series, "ray_image_serving_stage_seconds_sum", stage=stage) > 0, stage
    # Serve tags each series with the replica that recorded it.
    labels = next(seen for seen, _ in series["ray_image_serving_images_generated_total"])
    assert labels["deployment"] == "sd-tiny" and labels["application"] == "images"
    # Serve's own metrics come from the same endpoint.
    assert total(series, "ray_serve_num_http_requests_total") >= 2


def test_health_reports_no_gpu_on_cpu(client):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok"
    assert all(model["gpu"] is None for model in health["models"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_chat_tokens_and_timings_reach_the_access_log_and_metrics(
    client, serve_log_dir, metrics_url, stream
):
    from tests.integration.test_chat import ask, data_url

    series = "ray_image_serving_chat_tokens_total"
    before = total(scrape(metrics_url), series, model="glm-4.6v-tiny", kind="completion")
    request_id = f"obs-chat-{'stream' if stream else 'whole'}"
    body = {
        "model": "glm-4.6v-tiny",
        "messages": ask("What is on this picture?", data_url()),
        "max_tokens": 12,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }
    response = client.post(
        "/v1/chat/completions",
        headers={"x-request-id": request_id},
        json={k: v for k, v in body.items() if v is not None},
    )
    assert response.status_code == 200, response.text
    if stream:
        chunks = [
            json.loads(line[6:])
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        usage = chunks[-1]["usage"]
    else:
        usage = response.json()["usage"]

    [(_, entry)] = access_entries(serve_log_dir, request_id)
    assert entry["model"] == "glm-4.6v-tiny" and entry["status"] == 200
    assert entry["prompt_tokens"] == usage["prompt_tokens"] > 0
    assert entry["completion_tokens"] == usage["completion_tokens"] > 0
    assert entry["first_token_ms"] > 0 and entry["tokens_per_s"] > 0
    assert entry["batch_images"] >= 1  # rows in its generate call

    def counted() -> dict[str, float]:
        seen = scrape(metrics_url)
        return {
            "completion": total(seen, series, model="glm-4.6v-tiny", kind="completion"),
            "prompt": total(seen, series, model="glm-4.6v-tiny", kind="prompt"),
            "first_token": total(
                seen, "ray_image_serving_chat_first_token_seconds_count", model="glm-4.6v-tiny"
            ),
            "rate": total(
                seen, "ray_image_serving_chat_tokens_per_second_count", model="glm-4.6v-tiny"
            ),
        }

    deadline = time.monotonic() + 60
    while (seen := counted())["completion"] < before + usage["completion_tokens"]:
        assert time.monotonic() < deadline, seen
        time.sleep(1)
    assert seen["prompt"] >= usage["prompt_tokens"]
    assert seen["first_token"] >= 1 and seen["rate"] >= 1


def test_a_streamed_image_request_logs_its_images_when_it_ends(client, serve_log_dir):
    response = client.post(
        "/v1/images/generations",
        headers={"x-request-id": "obs-image-stream"},
        json={
            "model": "sd-tiny",
            "prompt": "streamed",
            "size": "64x64",
            "steps": 4,
            "stream": True,
            "partial_images": 1,
        },
    )
    assert response.status_code == 200
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    final = base64.b64decode(events[-1]["b64_json"])
    [(_, entry)] = access_entries(serve_log_dir, "obs-image-stream")
    assert entry["status"] == 200 and entry["model"] == "sd-tiny"
    assert entry["image_sha256"] == [hashlib.sha256(final).hexdigest()]
