"""build_app(args): the one place that composes the Ray Serve application.

    Gateway ──▶ PromptTemplater
            └─▶ one ModelReplica deployment per model (text-to-image or edit),
                named after the model
    JobRunner ─▶ the same PromptTemplater and ModelReplica handles, for durable jobs

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
from serve_app.config import AppConfig


def build_app(args: dict[str, Any]) -> Application:
    """The Serve config's builder: it must take exactly one argument, the args dict."""
    # Validation happens here, before any replica starts or any model loads.
    return compose(AppConfig.model_validate(args))


def compose(config: AppConfig, gateway_options: dict[str, Any] | None = None) -> Application:
    """`gateway_options` (Deployment.options for the Gateway) serve in-process deploys such
    as tests; a Serve config sets the same through its `deployments:` section."""
    config = config.with_absolute_store_path()
    tiny_cache = str(config.resolve_path(config.tiny_model_cache))
    templater = PromptTemplater.bind(str(config.resolve_path(config.templates_path)))
    models = {
        model.name: ModelReplica.options(
            name=model.name,
            # Room for two full batches: one running, one forming.
            max_ongoing_requests=max(2 * model.batching.max_batch_size, 8),
        ).bind(model, tiny_cache, config.jobs)
        for model in config.models
    }
    # Passed to the Gateway only so that Serve deploys it: it runs on its own.
    job_runner = JobRunner.bind(config, templater, models)
    gateway = Gateway.options(**gateway_options) if gateway_options else Gateway
    return gateway.bind(config, templater, models, job_runner)
