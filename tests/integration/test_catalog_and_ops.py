"""Catalog and operations routes of the running application."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_models_list_each_model_with_its_task(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    models = {card["id"]: card for card in body["data"]}
    tasks = {name: card["task"] for name, card in models.items()}
    assert tasks == {
        "z-image-tiny": "text-to-image",
        "sd-tiny": "text-to-image",
        "sd-slow-tiny": "text-to-image",
        "glm-image-tiny": "text-to-image",
        "qwen-image-tiny": "text-to-image",
        "flux-tiny": "text-to-image",
        "generic-tiny": "text-to-image",
        "pix2pix-tiny": "image-edit",
        "qwen-edit-tiny": "image-edit",
        "qwen-edit-plus-tiny": "image-edit",
        "longcat-edit-tiny": "image-edit",
        "flux-kontext-tiny": "image-edit",
        "glm-4.6v-tiny": "vision-chat",
        "qwen2.5-vl-tiny": "vision-chat",
    }
    assert models["sd-tiny"]["max_n"] == 4
    assert models["sd-tiny"]["capabilities"]["supports_partial_images"] is True
    assert models["longcat-edit-tiny"]["capabilities"]["supports_partial_images"] is False
    assert models["glm-4.6v-tiny"]["chat"]["max_output_tokens"] == 256
    assert models["glm-4.6v-tiny"]["chat"]["thinks"] is True
    assert models["sd-tiny"].get("chat") is None
    assert client.get("/v1/models/sd-tiny").json()["family"] == "stable-diffusion"
    assert client.get("/v1/models/missing").status_code == 404


def test_templates_and_styles_for_drop_downs(client):
    templates = client.get("/v1/templates").json()["data"]
    names = {template["name"] for template in templates}
    assert {"product-main-shot", "product-scene-shot", "report-section-illustration"} <= names
    main = next(t for t in templates if t["name"] == "product-main-shot")
    assert main["variables"]["product_name"]["required"] is True
    assert "prompt" not in main  # the template text stays server-side

    styles = client.get("/v1/styles").json()
    assert {"photorealistic", "anime", "oil-painting"} <= {s["name"] for s in styles["data"]}
    assert any(brand["palette"] for brand in styles["brands"])


def test_health_reports_models_and_replicas(client):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok"
    reported = {m["model"]: m["task"] for m in health["models"]}
    assert reported["glm-image-tiny"] == "text-to-image"
    assert reported["longcat-edit-tiny"] == "image-edit"
    assert reported["qwen2.5-vl-tiny"] == "vision-chat"
    assert reported["qwen-image-tiny"] == "text-to-image"
    assert reported["flux-kontext-tiny"] == "image-edit"
    assert len(reported) == 14
    assert all(m["device"] == "cpu" for m in health["models"])
    deployments = health["deployments"]
    assert set(deployments) == {"Gateway", "PromptTemplater", "JobRunner", *reported}
    for name, deployment in deployments.items():
        assert deployment["state"] == "ok", name
        assert deployment["running"] == deployment["target"] >= 1, name
    assert health["dependencies"]["job_store"]["status"] == "ok"


def test_liveness_and_readiness(client):
    assert client.get("/v1/health/live").json() == {"status": "ok"}
    ready = client.get("/v1/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert ready.json()["deployments"]["sd-tiny"]["running"] >= 1


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/images/generations" in spec["paths"]
    assert "/v1/images/edits" in spec["paths"]
    assert "/v1/chat/completions" in spec["paths"]
