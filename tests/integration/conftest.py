"""A real Ray Serve application on localhost with every tiny family, and two plain HTTP
listeners on 127.0.0.1: an allowlisted image host and a "secret" one nothing may reach."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from serve_app.environment import WEBHOOK_SECRETS_ENV
from serve_app.families import FAMILIES, Batching
from tests.helpers import free_port, png_bytes, scratch_args


class ImageHost:
    """A loopback HTTP server that counts connections and serves fixed routes."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]):
        self.routes = routes
        self.connections = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self):
                host.connections += 1
                super().setup()

            def do_GET(self):
                status, headers, body = host.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="session")
def secret_host() -> ImageHost:
    """Stands for an internal service: no request may ever reach it."""
    return ImageHost({"/": (200, {"Content-Type": "image/png"}, png_bytes(64, 64))})


@pytest.fixture(scope="session")
def image_host(secret_host) -> ImageHost:
    return ImageHost(
        {
            "/photo.png": (200, {"Content-Type": "image/png"}, png_bytes(256, 192, seed=3)),
            "/hop": (302, {"Location": "/photo.png"}, b""),
            "/to-secret": (302, {"Location": secret_host.url("/")}, b""),
            "/to-localhost": (302, {"Location": f"http://localhost:{secret_host.port}/"}, b""),
        }
    )


# A Standard Webhooks secret for tests only (whsec_ + base64 of 32 bytes).
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3cDzLKVWqb0="
# What a node running the test applications has in its environment (secrets never come
# from the config).
SERVICE_ENVIRONMENT = {WEBHOOK_SECRETS_ENV: WEBHOOK_SECRET}


@contextlib.contextmanager
def service_environment() -> Iterator[None]:
    """SERVICE_ENVIRONMENT in os.environ while a Ray node starts, then as it was."""
    saved = {name: os.environ.get(name) for name in SERVICE_ENVIRONMENT}
    os.environ.update(SERVICE_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    # Checked by the standardwebhooks package when it arrived, as a real receiver checks
    # (its timestamp tolerance is five minutes from then, not from when a test looks).
    verification_error: str | None

    @property
    def event(self) -> dict:
        """The payload and its `webhook-id`; only for a delivery that verified."""
        assert self.verification_error is None, self.verification_error
        return {"id": self.headers["webhook-id"], **json.loads(self.body)}


class WebhookReceiver:
    """A loopback endpoint that verifies and records every delivery. Paths choose the answer
    to one that verifies (one that does not gets 401): /ok → 204, /flaky → 500 to the first
    two attempts of each message then 204, /gone → 410, /moved → 302 to /ok (which must not
    be followed)."""

    def __init__(self, secret: str):
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        webhook = Webhook(secret)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    webhook.verify(body, headers)
                    error = None
                except WebhookVerificationError as failure:
                    error = str(failure) or type(failure).__name__
                with receiver.lock:
                    receiver.deliveries.append(Delivery(self.path, headers, body, error))
                    tries = sum(
                        1
                        for seen in receiver.deliveries
                        if seen.path == self.path
                        and seen.headers.get("webhook-id") == headers.get("webhook-id")
                    )
                status = {"/ok": 204, "/gone": 410, "/moved": 302}.get(self.path, 404)
                if self.path == "/flaky":
                    status = 500 if tries <= 2 else 204
                if error is not None:
                    status = 401
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/ok")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def received(self, path: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if path is None or d.path == path]


@pytest.fixture(scope="session")
def webhook_receiver() -> WebhookReceiver:
    return WebhookReceiver(WEBHOOK_SECRET)


def tiny_text_to_image(name: str, family: str, guidance: float) -> dict:
    return {
        "name": name,
        "family": family,
        "path": f"tiny:{family}",
        "dtype": "float32",
        "device": "cpu",
        "defaults": {"size": "64x64", "steps": 2, "guidance_scale": guidance},
        "limits": {
            "max_n": 2,
            "min_side": 64,
            "max_side": 256,
            "max_pixels": 65536,
            "max_steps": 8,
        },
        "batching": {"max_batch_size": 4},
    }


def integration_app_args(
    tmp_root: Path,
    tiny_cache: Path,
    allowed_hosts: list[str] | None = None,
    webhook_hosts: list[str] | None = None,
) -> dict:
    """configs/local.yaml's args, with the GLM-Image family added and, for families that
    share pipeline calls, a slower batch window so that concurrent test requests reliably
    meet in one batch (families that run requests alone wait for no one)."""
    args = scratch_args(tmp_root, tiny_cache)
    args["gateway"] = {"max_request_bytes": 65536, "max_upload_bytes": 4 << 20}
    args["images"] = {
        "max_bytes": 1 << 20,
        "max_pixels": 4_000_000,
        "max_side": 4096,
        # The fixture image host speaks plain http; every other host is still refused by
        # address, which is what the SSRF tests check.
        "fetch": {"allow_http": True, "allowed_hosts": allowed_hosts or [], "timeout_s": 5},
    }
    # Short leases and quick retries, so that the fault tests finish in seconds.
    args["jobs"] = {
        "store_url": f"sqlite:///{tmp_root / 'jobs.sqlite3'}",
        "lease_s": 6,
        "sweep_interval_s": 1,
        "poll_interval_s": 0.2,
        "webhooks": {
            "allow_http": True,
            "allowed_hosts": webhook_hosts or [],
            "timeout_s": 3,
            "retry_schedule_s": [0.5, 0.5, 1, 1],
        },
    }
    for model in args["models"]:
        if FAMILIES[model["family"]].batching is Batching.SHARED:
            model["batching"] = {"max_batch_size": 8, "idle_wait_s": 0.5}
    # The other text-to-image families, small and quick.
    args["models"].append(tiny_text_to_image("glm-image-tiny", "glm-image", guidance=1.5))
    args["models"].append(tiny_text_to_image("qwen-image-tiny", "qwen-image", guidance=4.0))
    args["models"].append(tiny_text_to_image("flux-tiny", "flux", guidance=3.5))
    # The generic family: a checkpoint AutoPipeline loads, declared in config alone.
    args["models"].append(tiny_text_to_image("generic-tiny", "diffusers", guidance=5.0))
    # FLUX.1 Kontext beside the embedded default's edit models, with their working area.
    args["models"].append(
        {
            "name": "flux-kontext-tiny",
            "family": "flux-kontext",
            "path": "tiny:flux-kontext",
            "dtype": "float32",
            "device": "cpu",
            "defaults": {"size": "256x256", "steps": 2, "guidance_scale": 2.5},
            "limits": {"max_n": 2, "min_side": 64, "max_side": 512, "max_pixels": 262144},
            "batching": {"max_batch_size": 4},
        }
    )
    # A model of its own for the cancellation tests: many steps allowed, so an abandoned
    # request would run for tens of seconds, and no other test's requests in its calls.
    args["models"].append(
        {
            "name": "sd-slow-tiny",
            "family": "stable-diffusion",
            "path": "tiny:stable-diffusion",
            "dtype": "float32",
            "device": "cpu",
            "defaults": {"size": "64x64", "steps": 4, "guidance_scale": 5.0},
            "limits": {
                "max_n": 1,
                "min_side": 64,
                "max_side": 256,
                "max_pixels": 65536,
                "max_steps": 5000,
            },
            "batching": {"max_batch_size": 1},
        }
    )
    # The second vision-chat family, through the same code as GLM-4.6V.
    args["models"].append(
        {
            "name": "qwen2.5-vl-tiny",
            "family": "qwen2.5-vl",
            "path": "tiny:qwen2.5-vl",
            "dtype": "float32",
            "device": "cpu",
            "batching": {"max_batch_size": 8, "idle_wait_s": 0.5},
            "chat": {"defaults": {"max_tokens": 16}, "limits": {"max_images": 2}},
        }
    )
    return args


@pytest.fixture(scope="session")
def app_args(tmp_path_factory, tiny_cache, image_host, webhook_receiver) -> dict:
    return integration_app_args(
        tmp_path_factory.mktemp("serve"),
        tiny_cache,
        allowed_hosts=[f"127.0.0.1:{image_host.port}"],
        webhook_hosts=[webhook_receiver.host],
    )


@pytest.fixture(scope="session")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def metrics_url(metrics_port) -> str:
    """Ray's Prometheus endpoint: Serve's metrics and the service's own."""
    return f"http://127.0.0.1:{metrics_port}/metrics"


@pytest.fixture(scope="session")
def serve_log_dir(tmp_path_factory) -> Path:
    """Where the replicas write their Serve logs (JSON-encoded, as in production)."""
    return tmp_path_factory.mktemp("serve-logs")


@pytest.fixture(scope="session")
def serve_port(metrics_port) -> Iterator[int]:
    """A local Ray with Serve on 127.0.0.1; test modules deploy their applications on it."""
    import ray
    from ray import serve

    port = free_port()
    # Ray's workers inherit the environment its node started with: the secrets go there, as
    # on a real node, and leave this process's environment as it was.
    with service_environment():
        ray.init(
            # Logical CPUs: each replica reserves one by default, and the test applications
            # (the main one, the contract one, the S3 one) run side by side on this node.
            num_cpus=32,
            include_dashboard=False,
            log_to_driver=False,
            _metrics_export_port=metrics_port,
            # Workers push metrics every second instead of every ten.
            _system_config={"metrics_report_interval_ms": 1000},
        )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


def deploy_and_wait(
    args: dict, name: str, route_prefix: str, port: int, logs_dir: Path | None = None
) -> str:
    """serve.run the application built from `args`; its base URL once /v1/health says 200.
    With `logs_dir`, replicas write JSON logs there, as in production."""
    from ray import serve

    from serve_app.graph import build_app

    logging_config = {"encoding": "JSON", "logs_dir": str(logs_dir)} if logs_dir else None
    serve.run(build_app(args), name=name, route_prefix=route_prefix, logging_config=logging_config)
    url = f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Serve application {name!r} did not become healthy in 120 s")


@pytest.fixture(scope="session")
def base_url(app_args, serve_port, serve_log_dir) -> str:
    return deploy_and_wait(app_args, "images", "/", serve_port, logs_dir=serve_log_dir)


@pytest.fixture(scope="session")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=120) as http:
        yield http


@pytest.fixture(scope="session")
def openai_client(base_url):
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-locally", max_retries=0)
