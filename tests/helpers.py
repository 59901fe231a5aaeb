"""What many tests share: the embedded default's app args, a tiny model's config, a free
port, the error envelope check, image bytes and pixels, and the Gateway's parts run
in-process (no Ray)."""

from __future__ import annotations

import base64
import copy
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from benchmarks.service import free_port
from serve_app.config import ModelConfig
from serve_app.prompts import PromptCatalog
from serve_app.service.backends import CatalogPrompts

__all__ = ["free_port"]  # one definition, shared with the benchmarks

REPO = Path(__file__).resolve().parents[1]
LOCAL_YAML = REPO / "configs/local.yaml"
TEMPLATES = REPO / "configs/templates.yaml"
ENVELOPE_FIELDS = {"message", "type", "param", "code", "request_id"}


def local_serve_config() -> dict[str, Any]:
    """configs/local.yaml as Serve reads it (a fresh copy each call)."""
    return yaml.safe_load(LOCAL_YAML.read_text())


def local_args(**sections: Any) -> dict[str, Any]:
    """The embedded default's application args, templates by absolute path, with the given
    top-level sections replaced."""
    args = copy.deepcopy(local_serve_config()["applications"][0]["args"])
    args["templates_path"] = str(TEMPLATES)
    args.update(sections)
    return args


def scratch_args(root: Path, tiny_cache: str | Path, **sections: Any) -> dict[str, Any]:
    """local_args with every file it writes under `root` and the session's tiny models."""
    return local_args(
        tiny_model_cache=str(tiny_cache),
        storage={"kind": "local", "root": str(root / "images"), "url_ttl_s": 600},
        jobs={"store_url": f"sqlite:///{root / 'jobs.sqlite3'}"},
        **sections,
    )


def tiny_model_config(family: str, guidance_scale: float = 5.0, **sections: Any) -> ModelConfig:
    """A tiny model of `family` on the CPU, as the unit tests run it: 2 steps at 64x64,
    up to 4 images of 32-256 px a side; `sections` (batching, adapters, previews...) added."""
    return ModelConfig.model_validate(
        {
            "name": f"{family}-unit",
            "family": family,
            "path": f"tiny:{family}",
            "dtype": "float32",
            "device": "cpu",
            "defaults": {"size": "64x64", "steps": 2, "guidance_scale": guidance_scale},
            "limits": {"max_n": 4, "min_side": 32, "max_side": 256, "max_pixels": 65536},
            **sections,
        }
    )


def assert_error(response, status: int, code: str | None = None, param: str | None = None):
    """The response is the API's error envelope with this status (and code and param)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ENVELOPE_FIELDS
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def pixels(b64: str) -> np.ndarray:
    return np.asarray(decode(b64).convert("RGB"), dtype=np.int16)


def in_process_app(
    config,
    models: dict[str, Any] | None = None,
    *,
    metrics=None,
    access_logger: logging.Logger | None = None,
    access_log_extra_key: str = "access",
):
    """The Gateway's FastAPI app from the same factory the deployment uses, with the
    templater's catalog and the given model backends in this process."""
    from serve_app.api.app import create_app, gateway_parts

    prompts = CatalogPrompts(PromptCatalog.from_yaml(Path(config.templates_path)))
    parts = gateway_parts(
        config,
        prompts,
        models or {},
        metrics=metrics,
        access_logger=access_logger,
        access_log_extra_key=access_log_extra_key,
    )
    return create_app(parts)
