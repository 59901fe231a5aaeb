"""The Grafana dashboard asks only for series that exist: the service's own metrics
(serve_app/observability/metrics.py) and those Ray Serve and Ray's node agent define
in their installed source."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ray

from serve_app.observability.metrics import METRICS

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "configs/grafana/image-service.json"
RAY_SOURCE = Path(ray.__file__).parent

# Ray's Prometheus exporter prefixes `ray_`; counters gain `_total`, histograms three series.
SERIES_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")
NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def ray_defined_series() -> set[str]:
    """Metric names in Serve's source (f-strings expanded per protocol) and the node agent's."""
    names: set[str] = set()
    for path in (RAY_SOURCE / "serve").rglob("*.py"):
        for name in re.findall(r"[\"'](serve_[a-z_{}]+)[\"']", path.read_text()):
            names.update(name.replace("{protocol_name}", p) for p in ("http", "grpc"))
    reporter = RAY_SOURCE / "dashboard/modules/reporter/reporter_agent.py"
    names.update(re.findall(r"Gauge\(\s*\"(node_[a-z_]+)\"", reporter.read_text()))
    return {"ray_" + name + suffix for name in names for suffix in SERIES_SUFFIXES}


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: what is left once strings, label matchers,
    ranges, grouping clauses and function calls are set aside."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    return {
        match.group()
        for match in NAME.finditer(expr)
        if not expr[match.end() :].lstrip().startswith("(")
    }


def queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label): the metric is a query
            metric = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert metric, variable["definition"]
            found.append((variable["name"], metric.group(1)))
    return found


def test_series_parser_keeps_only_metric_names():
    expr = (
        'histogram_quantile(0.95, sum by (le, model) (rate(ray_a_bucket{application="x", '
        'kind=~"b|c"}[$__rate_interval]))) / ignoring (kind) ray_b_total'
    )
    assert series_in(expr) == {"ray_a_bucket", "ray_b_total"}


def test_every_panel_queries_defined_series():
    known = ray_defined_series() | {name for spec in METRICS for name in spec.prometheus_names}
    unknown = {(title, name) for title, expr in queries() for name in series_in(expr) - known}
    assert unknown == set()


def test_every_service_metric_and_the_serve_essentials_are_on_the_dashboard():
    used = {name for _, expr in queries() for name in series_in(expr)}
    for spec in METRICS:
        assert used & set(spec.prometheus_names), spec.name
    essentials = {
        "ray_serve_num_http_requests_total",  # QPS
        "ray_serve_http_request_latency_ms_bucket",  # p50/p95/p99
        "ray_serve_deployment_replica_healthy",  # replicas
        "ray_serve_deployment_queued_queries",  # queue length
    }
    assert essentials <= used


def test_panels_have_ids_titles_and_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    assert all(panel["title"] and panel["targets"] for panel in dashboard["panels"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "application"} <= variables
