"""The LitAPI of the LitServe baseline (benchmarks/litserve_server.py).

A module of its own, at module level, because LitServe pickles the API into its worker
processes; importing it needs litserve, which only that baseline's process does.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import litserve

from benchmarks.configs import load_application, model_config
from serve_app.config import AppConfig, parse_size
from serve_app.images import encode_image
from serve_app.models.loading import load_model
from serve_app.models.spec import GenerationSpec

# LitServe's own default wait for a batch to fill, as its docs show it.
BATCH_TIMEOUT_S = 0.05


class ImageGenerationAPI(litserve.LitAPI):
    def __init__(self, config_path: Path, model: str, max_batch_size: int, threads: int | None):
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=BATCH_TIMEOUT_S if max_batch_size > 1 else 0.0,
            api_path="/v1/images/generations",
        )
        self.config_path, self.model_name, self.threads = config_path, model, threads
        self.batching = max_batch_size > 1

    def setup(self, device: str) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        application = load_application(self.config_path)
        app_config = AppConfig.model_validate(application["args"])
        self.config = model_config(application, self.model_name)
        self.loaded = load_model(self.config, app_config.resolve_path(app_config.tiny_model_cache))

    def decode_request(self, request: dict) -> GenerationSpec:
        defaults = self.config.defaults
        width, height = parse_size(request.get("size") or defaults.size)
        seed, n = int(request.get("seed", 0)), int(request.get("n", 1))
        return GenerationSpec(
            prompt=request["prompt"],
            negative_prompt=defaults.negative_prompt,
            width=width,
            height=height,
            steps=int(request.get("steps") or defaults.steps),
            guidance_scale=defaults.guidance_scale,
            seeds=tuple(seed + i for i in range(n)),
        )

    def batch(self, specs: list[GenerationSpec]) -> list[GenerationSpec]:
        return specs

    def predict(self, specs: list[GenerationSpec] | GenerationSpec) -> list | tuple:
        batch = specs if isinstance(specs, list) else [specs]
        # The same grouping as the service: one pipeline call per batch key.
        groups: dict[tuple, list[int]] = {}
        for index, spec in enumerate(batch):
            groups.setdefault(spec.batch_key(), []).append(index)
        outputs: list = [None] * len(batch)
        for indices in groups.values():
            group = [batch[i] for i in indices]
            images = self.loaded.family.run(self.loaded.pipeline, group)
            offset = 0
            for index, spec in zip(indices, group, strict=True):
                outputs[index] = (images[offset : offset + spec.n], len(images))
                offset += spec.n
        return outputs if self.batching else outputs[0]

    def unbatch(self, outputs: list) -> list:
        return outputs

    def encode_response(self, output: tuple) -> dict:
        images, batch_images = output
        data = [{"b64_json": base64.b64encode(encode_image(p, "png")).decode()} for p in images]
        return {"created": int(time.time()), "data": data, "batch_images": batch_images}
