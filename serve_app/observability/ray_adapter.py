"""The one place serve_app touches Ray for observability: a MetricSink over
`ray.serve.metrics`, and the logger Serve writes replica logs with (which the service's
own loggers join).

Create the sink inside a replica (a deployment's `__init__`): Serve then tags every
series with its application, deployment and replica, and Ray's metrics agent exports
them with Serve's own.
"""

from __future__ import annotations

import logging

from ray.serve import metrics as serve_metrics

from serve_app.observability.metrics import METRICS, MetricSpec, ServiceMetrics

# Serve's replica logger: its handlers write the replica log file, in TEXT or JSON
# (`logging_config.encoding`); fields under this key become top-level JSON keys.
SERVE_LOGGER = "ray.serve"
SERVE_EXTRA_FIELDS_KEY = "ray_serve_extra_fields"


class RayMetricSink:
    def __init__(self) -> None:
        self._metrics = {spec.name: _create(spec) for spec in METRICS}

    def record(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        metric = self._metrics[spec.name]
        if spec.kind == "counter":
            metric.inc(value, tags=tags)
        elif spec.kind == "histogram":
            metric.observe(value, tags=tags)
        else:
            metric.set(value, tags=tags)


def _create(spec: MetricSpec):
    if spec.kind == "counter":
        return serve_metrics.Counter(spec.name, spec.description, tag_keys=spec.tag_keys)
    if spec.kind == "histogram":
        return serve_metrics.Histogram(
            spec.name, spec.description, boundaries=list(spec.boundaries), tag_keys=spec.tag_keys
        )
    return serve_metrics.Gauge(spec.name, spec.description, tag_keys=spec.tag_keys)


def replica_metrics() -> ServiceMetrics:
    return ServiceMetrics(RayMetricSink())


def serve_logger() -> logging.Logger:
    return logging.getLogger(SERVE_LOGGER)


# The packages whose module loggers are the service's own log lines.
APP_LOGGER_NAMES = ("serve_app", "deployments")


def route_app_logs() -> None:
    """The service's own lines ("job runner started", "lease lost", a failed webhook)
    go where Serve's go: this replica's log file, in its encoding (JSON in production)
    and at its level, with its deployment and replica fields. Without this they reach no
    file: Python's root logger has no handler in a replica. Call it first in a
    deployment's `__init__`, once Serve has set up its logger."""
    serve = serve_logger()
    for name in APP_LOGGER_NAMES:
        logger = logging.getLogger(name)
        logger.handlers = list(serve.handlers)
        logger.setLevel(serve.level)
        logger.propagate = False
