"""The Serve config a benchmark row runs: a config file's application, narrowed to one model
with its batching set for the row. Deployed the way `serve run config.yaml` deploys it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from serve_app.config import AppConfig, ModelConfig
from serve_app.families import FAMILIES, Task

# Deployments build_app creates besides the models.
SUPPORT_DEPLOYMENTS = ("Gateway", "PromptTemplater")


def load_application(path: Path) -> dict[str, Any]:
    """The first application of a Serve config file."""
    return yaml.safe_load(path.read_text())["applications"][0]


def model_config(application: dict[str, Any], model: str) -> ModelConfig:
    config = AppConfig.model_validate(application["args"]).model(model)
    if config is None:
        raise SystemExit(f"model {model!r} is not in the config")
    return config


def bench_application(
    application: dict[str, Any],
    model: str,
    max_batch_size: int,
    root: Path,
    model_actor_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Only `model` (others would share the CPU or GPU), batching set to `max_batch_size`,
    and relative paths made absolute against `root`, where the config was meant to start."""
    app = copy.deepcopy(application)
    args = app["args"]
    args["models"] = [m for m in args["models"] if m["name"] == model]
    if not args["models"]:
        raise SystemExit(f"model {model!r} is not in the config")
    entry = args["models"][0]
    entry["batching"] = {**entry.get("batching", {}), "max_batch_size": max_batch_size}
    # The config refuses max_n above the batch size; a benchmark request asks for one
    # image (or one choice, for a vision-chat model).
    limits = entry.setdefault("limits", {})
    limits["max_n"] = min(limits.get("max_n", 4), max_batch_size)
    if FAMILIES[entry["family"]].task is Task.VISION_CHAT:
        chat_limits = entry.setdefault("chat", {}).setdefault("limits", {})
        chat_limits["max_n"] = min(chat_limits.get("max_n", 4), max_batch_size)
    for key in ("templates_path", "tiny_model_cache"):
        if key in args:
            args[key] = str((root / args[key]).resolve())
    if "storage" in args and "root" in args["storage"]:
        args["storage"]["root"] = str((root / args["storage"]["root"]).resolve())
    if not entry["path"].startswith("tiny:") and (root / entry["path"]).exists():
        entry["path"] = str((root / entry["path"]).resolve())

    deployments = []
    for deployment in app.get("deployments", []):
        if deployment["name"] in SUPPORT_DEPLOYMENTS:
            deployments.append(deployment)
        elif deployment["name"] == model:
            deployment = dict(deployment)
            # Room for a full batch running and the next one forming.
            ongoing = deployment.get("max_ongoing_requests", 0)
            deployment["max_ongoing_requests"] = max(ongoing, 2 * max_batch_size, 8)
            if model_actor_options:
                options = {**deployment.get("ray_actor_options", {}), **model_actor_options}
                deployment["ray_actor_options"] = options
            deployments.append(deployment)
    app["deployments"] = deployments
    AppConfig.model_validate(args)  # fail here, not in a replica
    return app


def serve_config(application: dict[str, Any], port: int) -> dict[str, Any]:
    """A whole Serve config (as in configs/*.yaml) around one application."""
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port, "request_timeout_s": 600},
        "applications": [{**application, "name": "images", "route_prefix": "/"}],
    }
