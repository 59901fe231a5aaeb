"""build_app(args): the one place that composes the Ray Serve application.

    Gateway ──▶ PromptTemplater
            ├─▶ one ModelReplica deployment per text-to-image or edit model
            └─▶ one VisionChat deployment per vision-chat model
                (each deployment named after its model)
    JobRunner ─▶ the same handles, for durable jobs

Ops override any deployment's replicas, `num_gpus`, autoscaling and queue limits
by that name in the `deployments:` section of the Serve config.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.gateway import Gateway
from deployments.job_runner import JobRunner
from deployments.model_replica import ModelReplica
from deployments.prompt_templater import PromptTemplater
from deployments.vision_chat import VisionChat
from serve_app.config import AppConfig, ModelConfig
from serve_app.families import Task


def build_app(args: dict[str, Any]) -> Application:
    """The Serve config's builder: it must take exactly one argument, the args dict."""
    # Validation happens here, before any replica starts or any model loads.
    return compose(AppConfig.model_validate(args))


def compose(
    config: AppConfig,
    gateway_options: dict[str, Any] | None = None,
    model_options: dict[str, dict[str, Any]] | None = None,
) -> Application:
    """`gateway_options` (Deployment.options for the Gateway) and `model_options` (per model
    name) serve in-process deploys such as tests; a Serve config sets the same through its
    `deployments:` section."""
    config = config.with_absolute_store_path()
    tiny_cache = str(config.resolve_path(config.tiny_model_cache))
    templater = PromptTemplater.bind(str(config.resolve_path(config.templates_path)))
    models = {
        model.name: _model_deployment(
            model, tiny_cache, config, (model_options or {}).get(model.name)
        )
        for model in config.models
    }
    # Passed to the Gateway only so that Serve deploys it: it runs on its own.
    job_runner = JobRunner.bind(config, templater, models)
    gateway = Gateway.options(**gateway_options) if gateway_options else Gateway
    return gateway.bind(config, templater, models, job_runner)


def _model_deployment(
    model: ModelConfig, tiny_cache: str, config: AppConfig, extra: dict[str, Any] | None
) -> Application:
    # Room for two full batches: one running, one forming.
    options = {
        "name": model.name,
        "max_ongoing_requests": max(2 * model.batching.max_batch_size, 8),
        **(extra or {}),
    }
    if model.task is Task.VISION_CHAT:
        return VisionChat.options(**options).bind(model, tiny_cache)
    return ModelReplica.options(**options).bind(model, tiny_cache, config.jobs)
