"""Baseline 3: LitServe, the serving library a team might pick instead of this service.

LitServe 0.2.19 around this project's own loader, family call and encoder, with its own
dynamic batching (`max_batch_size`, `batch_timeout`), so the comparison measures the
serving layer and nothing else. It speaks the same OpenAI-shaped request as the service;
the batch size each request shared comes back in the body (`batch_images`), as LitServe
sets no per-request headers.

    python -m benchmarks.litserve_server --config configs/local.yaml --model sd-tiny \
        --port 8200 --max-batch-size 8
"""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from pathlib import Path

from benchmarks.configs import load_application, model_config
from benchmarks.service import running_baseline


def running_litserve(
    config_path: Path, model: str, port: int, max_batch_size: int, threads: int | None = None
) -> AbstractContextManager[str]:
    """LitServe as its own process; yields its URL."""
    args = ["--config", str(config_path), "--model", model]
    args += ["--max-batch-size", str(max_batch_size)]
    if threads:
        args += ["--threads", str(threads)]
    return running_baseline("benchmarks.litserve_server", args, port, threads)


def main() -> None:
    import litserve

    from benchmarks.litserve_api import ImageGenerationAPI

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a Serve config file")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    api = ImageGenerationAPI(args.config.resolve(), args.model, args.max_batch_size, args.threads)
    application = load_application(args.config)
    device = model_config(application, args.model).device
    accelerator = "cuda" if device == "cuda" else "cpu" if device == "cpu" else "auto"
    server = litserve.LitServer(api, accelerator=accelerator, devices=1, timeout=600)
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
