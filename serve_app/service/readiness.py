"""Readiness: can the service take requests now? (Liveness, that the Gateway answers at
all, needs nothing of this.)

`unavailable` (the route answers 503) when requests would fail: a deployment that every
request needs (the Gateway, the PromptTemplater) has no running replica although its
floor is one or more, no model has one, or a store that requests need does not answer
(the job store; the key store where keys are on; Redis where rate limits refuse requests
without it). `degraded` (still 200) when capacity is short but requests are served: a
deployment below its target, one model without a replica while others serve (a model
that failed to start: its own requests get 503 `model_unavailable`), the JobRunner gone
(accepted jobs wait in the store), Redis down where limits let requests pass.
Every Gateway sees the same cluster: a load balancer that took them all out for a
replica short would turn reduced capacity into an outage, so that is for alerts (the
body names it), not for the load balancer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from serve_app.protocol import Readiness

# Deployments that every request path needs, besides the models.
SERVING_DEPLOYMENTS = ("Gateway", "PromptTemplater")


@dataclass(frozen=True)
class Dependency:
    name: str
    check: Callable[[], Awaitable[None]]
    # Its failure makes requests fail (unavailable), rather than only degraded.
    required: bool


@dataclass(frozen=True)
class ReplicaCount:
    """A deployment's replicas as the Serve controller sees them."""

    status: str
    running: int
    target: int
    # The floor: autoscaling's min_replicas, or the fixed num_replicas.
    min_replicas: int


async def _probe(dependency: Dependency, timeout_s: float) -> dict[str, Any]:
    try:
        await asyncio.wait_for(dependency.check(), timeout_s)
    except Exception as error:  # reported, never raised: this is a health check
        return {
            "status": "unreachable",
            "reason": type(error).__name__,
            "required": dependency.required,
        }
    return {"status": "ok", "required": dependency.required}


def _deployment_state(count: ReplicaCount, serves_requests: bool) -> Readiness:
    if count.running == 0 and count.min_replicas >= 1 and serves_requests:
        return "unavailable"
    return "ok" if count.running >= count.target else "degraded"


async def readiness(
    dependencies: Iterable[Dependency],
    replicas: dict[str, ReplicaCount] | None,
    models: Iterable[str],
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    """The report: `status`, each dependency's answer, each deployment's replicas.
    `replicas` is None outside Ray Serve, or when the controller did not answer (Serve
    keeps serving without it, so that alone changes nothing)."""
    dependencies = list(dependencies)
    answers = await asyncio.gather(*(_probe(d, timeout_s) for d in dependencies))
    checked = {d.name: answer for d, answer in zip(dependencies, answers, strict=True)}
    states: list[Readiness] = [
        ("unavailable" if answer["required"] else "degraded")
        for answer in answers
        if answer["status"] != "ok"
    ]
    deployments: dict[str, Any] | None = None
    if replicas is not None:
        models = set(models)
        # One model down while another serves costs that model's requests, not the
        # service's: a balancer that dropped every Gateway would stop the others too.
        some_model_serves = any(replicas[m].running > 0 for m in models if m in replicas)
        needed = {*SERVING_DEPLOYMENTS, *(() if some_model_serves else models)}
        deployments = {}
        for name, count in sorted(replicas.items()):
            state = _deployment_state(count, serves_requests=name in needed)
            deployments[name] = {"state": state, **asdict(count)}
            states.append(state)
    status: Readiness = (
        "unavailable" if "unavailable" in states else "degraded" if "degraded" in states else "ok"
    )
    return {"status": status, "dependencies": checked, "deployments": deployments}
