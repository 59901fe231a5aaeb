"""Baseline 2: the single-process server most teams write first.

FastAPI, a plain `def` endpoint (so FastAPI's thread pool runs requests side by side), one
pipeline behind a lock (diffusers pipelines are not safe to call from two threads), one
pipeline call per request, no batching. It speaks the same OpenAI-shaped request as the
service, so the same load generator measures it.

    python -m benchmarks.naive_server --config configs/local.yaml --model sd-tiny --port 8100
"""

from __future__ import annotations

import argparse
import base64
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

from pydantic import BaseModel

from benchmarks.configs import load_application, model_config
from benchmarks.service import running_baseline
from serve_app.config import AppConfig, ModelConfig, parse_size
from serve_app.images import encode_image
from serve_app.models.loading import load_model
from serve_app.models.spec import GenerationSpec


class GenerationBody(BaseModel):
    model: str | None = None
    prompt: str
    n: int = 1
    size: str | None = None
    steps: int | None = None
    seed: int = 0


def create_app(config: ModelConfig, tiny_cache: Path):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    loaded = load_model(config, tiny_cache)
    lock = threading.Lock()
    app = FastAPI(title="naive image server")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "device": loaded.device}

    @app.post("/v1/images/generations")
    def generate(body: GenerationBody) -> JSONResponse:
        width, height = parse_size(body.size or config.defaults.size)
        spec = GenerationSpec(
            prompt=body.prompt,
            negative_prompt=config.defaults.negative_prompt,
            width=width,
            height=height,
            steps=body.steps or config.defaults.steps,
            guidance_scale=config.defaults.guidance_scale,
            seeds=tuple(body.seed + i for i in range(body.n)),
        )
        with lock:
            images = loaded.family.run(loaded.pipeline, [spec])
        data = [{"b64_json": base64.b64encode(encode_image(p, "png")).decode()} for p in images]
        return JSONResponse(
            {"created": int(time.time()), "data": data},
            headers={"x-batch-images": str(len(images))},
        )

    return app


def running_naive_server(
    config_path: Path, model: str, port: int, threads: int | None = None
) -> AbstractContextManager[str]:
    """The naive server as its own process; yields its URL."""
    args = ["--config", str(config_path), "--model", model]
    return running_baseline("benchmarks.naive_server", args, port, threads)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a Serve config file")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    application = load_application(args.config)
    app_config = AppConfig.model_validate(application["args"])
    config = model_config(application, args.model)
    tiny_cache = app_config.resolve_path(app_config.tiny_model_cache)
    uvicorn.run(
        create_app(config, tiny_cache), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
