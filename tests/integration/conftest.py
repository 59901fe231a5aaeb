"""A real Ray Serve application on localhost with every tiny text-to-image family."""

from __future__ import annotations

import copy
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def integration_app_args(tmp_root: Path) -> dict:
    """configs/local.yaml's args, with the GLM-Image family added and a slower batch window
    so that concurrent test requests reliably meet in one batch."""
    local = yaml.safe_load((REPO / "configs/local.yaml").read_text())
    args = copy.deepcopy(local["applications"][0]["args"])
    args["templates_path"] = str(REPO / "configs/templates.yaml")
    args["tiny_model_cache"] = str(tmp_root / "tiny-models")
    args["storage"] = {"kind": "local", "root": str(tmp_root / "images"), "url_ttl_s": 600}
    args["gateway"] = {"max_request_bytes": 65536}
    for model in args["models"]:
        model["batching"] = {"max_batch_size": 8, "batch_wait_timeout_s": 0.5}
    args["models"].append(
        {
            "name": "glm-image-tiny",
            "family": "glm-image",
            "path": "tiny:glm-image",
            "dtype": "float32",
            "device": "cpu",
            "defaults": {"size": "64x64", "steps": 2, "guidance_scale": 1.5},
            "limits": {
                "max_n": 2,
                "min_side": 64,
                "max_side": 256,
                "max_pixels": 65536,
                "max_steps": 8,
            },
            "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.2},
        }
    )
    return args


@pytest.fixture(scope="session")
def app_args(tmp_path_factory) -> dict:
    return integration_app_args(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="session")
def base_url(app_args) -> str:
    import ray
    from ray import serve

    from serve_app.graph import build_app

    port = free_port()
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(app_args), name="images", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError("the Serve application did not become healthy in 120 s")
    yield url
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=120) as http:
        yield http


@pytest.fixture(scope="session")
def openai_client(base_url):
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-locally", max_retries=0)
