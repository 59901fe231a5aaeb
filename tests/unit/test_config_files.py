"""Every Serve config in configs/ is valid for Serve and for the application's config model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.config import RESERVED_DEPLOYMENT_NAMES, AppConfig
from serve_app.prompts import PromptCatalog

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SERVE_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "templates.yaml")


def test_there_are_local_and_production_configs():
    assert {p.name for p in SERVE_CONFIGS} >= {"local.yaml", "production.yaml"}


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_is_valid(path):
    raw = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    for app in schema.applications:
        assert app.import_path == "serve_app.graph:build_app"
        config = AppConfig.model_validate(app.args)
        # Each deployment override must name a deployment the graph really creates.
        known = RESERVED_DEPLOYMENT_NAMES | {m.name for m in config.models}
        overridden = {d.name for d in app.deployments}
        assert overridden <= known, f"unknown deployments {overridden - known} in {path.name}"


def test_production_gives_each_model_a_gpu_and_bounded_queue():
    raw = yaml.safe_load((CONFIGS / "production.yaml").read_text())
    app = raw["applications"][0]
    config = AppConfig.model_validate(app["args"])
    overrides = {d["name"]: d for d in app["deployments"]}
    for model in config.models:
        deployment = overrides[model.name]
        assert deployment["ray_actor_options"]["num_gpus"] > 0
        assert deployment["max_queued_requests"] > 0
        assert deployment["max_ongoing_requests"] >= 2 * model.batching.max_batch_size
        assert "autoscaling_config" in deployment
        assert model.device == "cuda" and model.dtype in ("bfloat16", "float16")


def test_templates_file_loads():
    catalog = PromptCatalog.from_yaml(CONFIGS / "templates.yaml")
    assert len(catalog.templates) >= 5 and len(catalog.styles) >= 5 and catalog.brands
