"""Our service under test: Ray Serve in this process, deployed from a Serve config the way
`serve run config.yaml` deploys it, so `deployments:` overrides (GPUs, queues) apply."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.results import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RAY_ENV_FILE = REPO / "configs/ray.env"


def ray_environment(path: Path = RAY_ENV_FILE) -> dict[str, str]:
    """The `NAME=value` lines of configs/ray.env: Ray's process settings for this service."""
    settings = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    return settings


@contextmanager
def ray_session(num_cpus: int, num_gpus: int | None = None) -> Iterator[None]:
    """A local Ray instance owned by this process: ended with it, never anyone else's."""
    import ray

    # As `make serve` starts Ray (its workers inherit this environment); a variable set
    # by the caller wins, so a run can try another setting.
    for name, value in ray_environment().items():
        os.environ.setdefault(name, value)
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=False,
        namespace="serve",
    )
    try:
        yield
    finally:
        ray.shutdown()


def wait_healthy(
    health_url: str, timeout_s: float, failure: Callable[[], str | None] = lambda: None
) -> None:
    """Until `health_url` answers 200; `failure` names a reason to stop waiting at once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reason = failure()
        if reason:
            raise RuntimeError(reason)
        try:
            if httpx.get(health_url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{health_url} did not answer 200 within {timeout_s:.0f} s")


@contextmanager
def running_baseline(
    module: str, args: list[str], port: int, threads: int | None, timeout_s: float = 900
) -> Iterator[str]:
    """Start `python -m module args` as its own process group (a baseline server on
    `port`, answering /health when ready), yield its URL, stop it with its children."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", module, *args, "--port", str(port)]
    process = subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def exited() -> str | None:
            code = process.poll()
            return None if code is None else f"{module} exited with {code}"

        wait_healthy(f"{url}/health", timeout_s, exited)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def deploy_failure(app_name: str = "images") -> str | None:
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is not None and app.status == "DEPLOY_FAILED":
        return f"the service failed to deploy: {app.message}"
    return None


@contextmanager
def running_service(config: dict[str, Any], timeout_s: float = 900) -> Iterator[str]:
    """Deploy a whole Serve config (inside a ray_session) and yield its URL."""
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    # What `serve run config.yaml` does, minus the CLI: start Serve, deploy the config.
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
    )
    try:
        client.deploy_apps(schema)
        url = f"http://127.0.0.1:{schema.http_options.port}"
        wait_healthy(f"{url}/v1/health", timeout_s, deploy_failure)
        yield url
    finally:
        serve.shutdown()
