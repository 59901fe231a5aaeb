"""Every Serve config in configs/ is valid for Serve and for the application's config model."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import EncodingType, ServeDeploySchema

from benchmarks.service import ray_environment
from serve_app.config import RESERVED_DEPLOYMENT_NAMES, AppConfig
from serve_app.prompts import PromptCatalog

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
RAYSERVICE = CONFIGS / "kuberay/rayservice.yaml"
RAY_SETTINGS = ray_environment(CONFIGS / "ray.env")
SERVE_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "templates.yaml")


def test_there_are_local_and_production_configs():
    assert {p.name for p in SERVE_CONFIGS} >= {"local.yaml", "production.yaml"}


def check_serve_config(raw: dict, label: str) -> ServeDeploySchema:
    """What `serve deploy` and build_app check: Serve's own schema, then the app's args."""
    schema = ServeDeploySchema.model_validate(raw)
    for app in schema.applications:
        assert app.import_path == "serve_app.graph:build_app"
        config = AppConfig.model_validate(app.args)
        # Each deployment override must name a deployment the graph really creates.
        known = RESERVED_DEPLOYMENT_NAMES | {m.name for m in config.models}
        overridden = {d.name for d in app.deployments}
        assert overridden <= known, f"unknown deployments {overridden - known} in {label}"
    return schema


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_is_valid(path):
    check_serve_config(yaml.safe_load(path.read_text()), path.name)


def test_the_embedded_default_fits_a_two_core_machine():
    """Serve schedules a replica only where its logical CPUs fit: on a 2-core laptop every
    deployment of local.yaml, each model's included, must fit in 2 at once."""
    raw = yaml.safe_load((CONFIGS / "local.yaml").read_text())
    app = raw["applications"][0]
    config = AppConfig.model_validate(app["args"])
    deployments = {d["name"]: d for d in app["deployments"]}
    names = RESERVED_DEPLOYMENT_NAMES | {m.name for m in config.models}
    assert names <= set(deployments), "every deployment states its CPUs"
    reserved = sum(
        deployments[name]["ray_actor_options"]["num_cpus"]
        * deployments[name].get("num_replicas", 1)
        for name in names
    )
    assert reserved <= 2


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


def test_production_keeps_two_of_each_service_part_on_different_nodes():
    """A node lost takes at most one Gateway, PromptTemplater and JobRunner with it."""
    raw = yaml.safe_load((CONFIGS / "production.yaml").read_text())
    deployments = {d["name"]: d for d in raw["applications"][0]["deployments"]}
    for name in ("Gateway", "PromptTemplater", "JobRunner"):
        deployment = deployments[name]
        assert deployment["max_replicas_per_node"] == 1, name
        least = deployment.get("num_replicas") or deployment["autoscaling_config"]["min_replicas"]
        assert least >= 2, name


def test_production_answers_overload_and_logs_json():
    schema = check_serve_config(yaml.safe_load((CONFIGS / "production.yaml").read_text()), "prod")
    app = schema.applications[0]
    assert app.logging_config.encoding == EncodingType.JSON
    assert AppConfig.model_validate(app.args).observability.access_log
    overrides = {d.name: d for d in app.deployments}
    gateway = overrides["Gateway"]
    assert 64 <= gateway.max_ongoing_requests <= 128  # DESIGN §5: about 100
    assert gateway.max_queued_requests > 0
    assert gateway.backpressure_config.status_code == 429
    assert gateway.backpressure_config.retry_after_s > 0
    for model in AppConfig.model_validate(app.args).models:
        scaling = overrides[model.name].autoscaling_config
        # The autoscaler's target fits in what a replica may hold.
        assert scaling["target_ongoing_requests"] <= overrides[model.name].max_ongoing_requests


def rayservice() -> dict:
    return yaml.safe_load(RAYSERVICE.read_text())


def test_rayservice_embeds_the_production_serve_config():
    service = rayservice()
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    check_serve_config(embedded, "serveConfigV2")
    assert embedded == yaml.safe_load((CONFIGS / "production.yaml").read_text()), (
        "keep serveConfigV2 equal to configs/production.yaml"
    )


def test_rayservice_cluster_has_gpu_workers_and_secrets_from_k8s_secrets():
    cluster = rayservice()["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    groups = cluster["workerGroupSpecs"]
    gpu_groups = [
        group
        for group in groups
        if any(
            int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
            for c in group["template"]["spec"]["containers"]
        )
    ]
    assert gpu_groups and all(g["minReplicas"] <= g["maxReplicas"] for g in groups)
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in groups]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {item["name"]: item for item in container["env"]}
            signing = env["IMAGE_SERVICE_SIGNING_SECRET"]
            assert "value" not in signing and signing["valueFrom"]["secretKeyRef"]["name"]
            # No secret is written into the manifest itself: the service's own variables
            # all come from Kubernetes secrets; Ray's tuning knobs are plain values.
            ours = [item for name, item in env.items() if name.startswith("IMAGE_SERVICE_")]
            assert ours and all("value" not in item for item in ours)
            # Ray's process settings are configs/ray.env's, in every pod.
            assert {name: env[name].get("value") for name in RAY_SETTINGS} == RAY_SETTINGS
            # Where production.yaml keeps images, every pod has the shared volume.
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/mnt/shared/images" in mounts


def test_cluster_yaml_passes_the_launchers_checks():
    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in raw
    # What `ray up` runs on the file: provider defaults filled in, then Ray's JSON schema.
    validate_config(prepare_config(raw))
    nodes = raw["available_node_types"]
    assert raw["head_node_type"] in nodes
    assert any(node["resources"].get("GPU", 0) >= 1 for node in nodes.values())
    assert any("--metrics-export-port" in cmd for cmd in raw["head_start_ray_commands"])


def test_templates_file_loads():
    catalog = PromptCatalog.from_yaml(CONFIGS / "templates.yaml")
    assert len(catalog.templates) >= 5 and len(catalog.styles) >= 5 and catalog.brands
