"""The service under the campaign: configs/local.yaml's application (sd-tiny with its
admission bound, the job runner, webhooks, shared rate limits) deployed by `serve deploy`
on a Ray node of its own, with a Redis of its own to stop and its job store on the test
PostgreSQL behind a gate to shut (as a cluster runs it); its processes found by their
titles, so a scenario can read their memory or kill them as a crash would."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import httpx
import yaml
from sqlalchemy.engine import make_url

from benchmarks.service import ray_environment
from tests.databases import postgres_schema_url
from tests.helpers import free_port, local_serve_config, scratch_args
from tests.integration.cluster import BIN, RayNode, dashboard_up, run
from tests.integration.conftest import SERVICE_ENVIRONMENT
from tests.integration.jobs_helpers import wait_until
from tests.integration.processes import kill_session, session_pids
from tests.tcp_gate import TcpGate

MODEL = "sd-tiny"
# The deployments configs/local.yaml runs for sd-tiny's traffic, with its own options.
DEPLOYMENTS = ("Gateway", "PromptTemplater", "JobRunner", MODEL)


def local_deployment(name: str) -> dict:
    (deployment,) = [
        d for d in local_serve_config()["applications"][0]["deployments"] if d["name"] == name
    ]
    return deployment


def admission_bound() -> int:
    """Requests sd-tiny admits at once in the embedded default: running plus queued."""
    model = local_deployment(MODEL)
    return model["max_ongoing_requests"] + model["max_queued_requests"]


class PrivateRedis:
    """redis-server on a free loopback port, in a session of its own: stopped and started
    again by a scenario without touching the Redis other tests use."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.root = root
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self.answers, 30, "the private Redis")

    def answers(self) -> bool:
        import redis

        with contextlib.suppress(redis.RedisError):
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        return False

    def stop(self) -> None:
        if self.process is not None:
            kill_session(self.process)
            self.process = None


class Campaign:
    """The application deployed on its own node; torn down whole by `close`."""

    def __init__(self, root: Path, tiny_cache: Path, webhook_host: str):
        self.root = root
        self.node: RayNode | None = None
        self._resources = contextlib.ExitStack()
        self.redis = PrivateRedis(root)
        self.redis.start()
        self._resources.callback(self.redis.stop)
        # The job store in a schema of its own, reached through a gate: shut, it is the
        # database restarting (connections cut, new ones refused) for every process.
        schema_url = make_url(self._resources.enter_context(postgres_schema_url()))
        self.database = TcpGate(schema_url.port or 5432).open()
        self._resources.callback(self.database.shut)
        store_url = schema_url.set(host="127.0.0.1", port=self.database.port)
        args = scratch_args(root, tiny_cache)
        args["models"] = [m for m in args["models"] if m["name"] == MODEL]
        args["jobs"].update(
            store_url=store_url.render_as_string(hide_password=False),
            lease_s=6,
            sweep_interval_s=1,
            poll_interval_s=0.2,
            webhooks={
                "allow_http": True,
                "allowed_hosts": [webhook_host],
                "retry_schedule_s": [0.5, 1, 1],
            },
        )
        args["rate_limits"] = {
            "enabled": True,
            "redis_url": self.redis.url,
            # Far above the model's bound: the embedded default's capacity stays sd-tiny's
            # queue (local.yaml has no limits); every request still asks Redis.
            "requests_per_minute": 1_000_000,
            "max_concurrent": 100_000,
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = local_serve_config()
        config["http_options"] = {"host": "127.0.0.1", "port": self.port}
        application = config["applications"][0]
        application["args"] = args
        application["deployments"] = [local_deployment(name) for name in DEPLOYMENTS]
        self.config = config
        self.config_file = root / "campaign.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            **SERVICE_ENVIRONMENT,
            # Ray's settings as `make serve` starts them (HAProxy in front, gRPC hops).
            **ray_environment(),
            # A token of its own: a local ray.init (the integration tests') leaves one in
            # ~/.ray that `ray start` would take up and `serve deploy` would lack.
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
        }
        self.node = RayNode(self.env, root / "node.log", None, "campaign")
        try:
            address = f"http://127.0.0.1:{self.node.dashboard_port}"
            wait_until(lambda: self.node.started() and dashboard_up(address), 180, "the node")
            self.env["RAY_DASHBOARD_ADDRESS"] = address
            run([str(BIN / "serve"), "deploy", str(self.config_file)], self.env, root)
            wait_until(self.ready, 600, "the application ready")
        except BaseException:
            self.close()  # nothing of a failed start outlives the test session
            raise

    def add_model(self, name: str, path: Path) -> None:
        """Redeploy with one more sd-tiny-shaped model whose checkpoint is at `path`, as an
        operator adds a model to the config and runs `serve deploy` again."""
        application = self.config["applications"][0]
        (model,) = [m for m in application["args"]["models"] if m["name"] == MODEL]
        application["args"]["models"].append({**model, "name": name, "path": str(path)})
        application["deployments"].append({**local_deployment(MODEL), "name": name})
        self._deploy()

    def set_gateway(self, **options) -> None:
        """Redeploy with these `gateway:` settings, as an operator edits the config and runs
        `serve deploy` again; returns once a new Gateway serves and readiness says 200."""
        old = set(self.replica_pids("Gateway"))
        self.config["applications"][0]["args"].setdefault("gateway", {}).update(options)
        self._deploy()
        wait_until(
            lambda: (pids := set(self.replica_pids("Gateway"))) and not pids & old and self.ready(),
            300,
            "the redeployed Gateway",
        )

    def _deploy(self) -> None:
        """`serve deploy` of the config as it now stands."""
        self.config_file.write_text(yaml.safe_dump(self.config))
        run([str(BIN / "serve"), "deploy", str(self.config_file)], self.env, self.root)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/health/ready", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def logs(self) -> Path:
        return Path(self.node.temp_dir) / "session_latest" / "logs"

    def replica_pids(self, deployment: str) -> list[int]:
        """The node's processes titled as `deployment`'s Serve replicas."""
        title = f"ray::ServeReplica:images:{deployment}".encode()
        pids = []
        for pid in session_pids(self.node.process.pid):
            with contextlib.suppress(OSError):
                # Ray appends ".method" to the title while the actor runs a method.
                name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                if name == title or name.startswith(title + b"."):
                    pids.append(pid)
        return pids

    def kill_replica(self, deployment: str) -> int:
        """SIGKILL to the one replica of `deployment`, as a crash (an OOM kill) would."""
        (pid,) = self.replica_pids(deployment)
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_recovered(self, deployment: str, old_pid: int, timeout_s: float = 240) -> float:
        """Seconds until a new replica of `deployment` runs and readiness says 200."""
        started = time.monotonic()
        wait_until(
            lambda: self.replica_pids(deployment) not in ([], [old_pid]) and self.ready(),
            timeout_s,
            f"{deployment} back after its replica was killed",
        )
        return time.monotonic() - started

    def close(self) -> None:
        if self.node is not None:
            self.node.kill()
        self._resources.close()


def rss_mib(pid: int) -> float | None:
    """Resident memory of `pid` (VmRSS), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
