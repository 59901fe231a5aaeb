"""What every pipeline family provides, and the one batched call text-to-image families share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from serve_app.families import FAMILIES, FamilyTraits
from serve_app.models.spec import GenerationSpec

# Told (step, latents) after each denoising step; may raise to stop the call.
StepHook = Callable[[int, torch.Tensor | None], None]


class PipelineFamily:
    """One diffusers pipeline family: how to build it tiny, load it, and call it for a batch.

    TextToImageFamily and ImageEditFamily (edit_base.py) add what their task's call needs.
    What a family is (task, sizes, batching, ...) is its row in the family table.
    """

    name: ClassVar[str]
    traits: ClassVar[FamilyTraits]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.traits = FAMILIES[cls.name]

    def pipeline_class(self) -> type:
        raise NotImplementedError

    def build_tiny(self, folder: Path) -> None:
        """Save a random-weight pipeline of this family's architecture to `folder`."""
        raise NotImplementedError

    def load(self, path: str | Path, torch_dtype: torch.dtype) -> Any:
        return self.pipeline_class().from_pretrained(str(path), dtype=torch_dtype)

    def run(self, pipeline: Any, specs: list, on_step: StepHook | None = None) -> list[np.ndarray]:
        """One pipeline call for specs that share a batch key; HxWx3 uint8 per image.

        `on_step(k, latents)` is told when denoising step k (1-based) has finished, with
        that step's latents (one row per image, in request order); it may raise to stop
        the call there.
        """
        raise NotImplementedError

    def step_arguments(self, on_step: StepHook | None) -> dict[str, Any]:
        """The pipeline keyword that reports steps, where the family has one."""
        if on_step is None or not self.traits.reports_steps:
            return {}

        def callback(_pipeline, step_index, _timestep, callback_kwargs):
            on_step(step_index + 1, callback_kwargs.get("latents"))
            return callback_kwargs

        return {"callback_on_step_end": callback}

    # Previews: from a step's latents to what the VAE decodes.
    def unpack_latents(
        self, pipeline: Any, latents: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """The step callback's latents as an image-shaped (B, C, h, w) tensor."""
        return latents

    def vae_input(self, pipeline: Any, latents: torch.Tensor, vae: Any) -> torch.Tensor:
        """Unpacked latents as `vae.decode` takes them: the pipeline's own un-scaling,
        by `vae`'s config (an AutoencoderTiny's is 1 and 0: it reads raw latents)."""
        config = vae.config
        scaling = getattr(config, "scaling_factor", None) or 1.0
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            return latents * _per_channel(std, latents) / scaling + _per_channel(mean, latents)
        return latents / scaling + (getattr(config, "shift_factor", None) or 0.0)


def _per_channel(values: list[float], like: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (like.ndim - 2)
    return torch.tensor(values, device=like.device, dtype=like.dtype).view(shape)


def check_one_batch_key(specs: list) -> None:
    first = specs[0].batch_key()
    if any(spec.batch_key() != first for spec in specs):
        raise ValueError("specs in one pipeline call must share a batch key")


def seeded_generators(specs: list) -> list[torch.Generator]:
    """A CPU generator per image from its request's seed, so the noise an image starts from
    depends neither on its neighbours in the batch nor on the device."""
    return [torch.Generator("cpu").manual_seed(seed) for spec in specs for seed in spec.seeds]


def to_uint8(images: Any) -> list[np.ndarray]:
    """A pipeline's `output_type="np"` floats in [0, 1] -> HxWx3 uint8 arrays."""
    return list((np.asarray(images) * 255).round().clip(0, 255).astype(np.uint8))


class TextToImageFamily(PipelineFamily):
    def call_arguments(
        self, first: GenerationSpec, prompts: list[str], negative_prompts: list[str] | None
    ) -> dict[str, Any]:
        """Keyword arguments for one pipeline call; everything batch_key() covers is in `first`."""
        return {
            "prompt": prompts,
            "negative_prompt": negative_prompts,
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
        }

    def run(
        self, pipeline: Any, specs: list[GenerationSpec], on_step: StepHook | None = None
    ) -> list[np.ndarray]:
        """Run one pipeline call for specs that share a batch key.

        Every image gets its own CPU generator seeded from its request, so the noise
        it starts from does not depend on its neighbours in the batch or on the device.
        Returns HxWx3 uint8 arrays, one per image, in request order.
        """
        check_one_batch_key(specs)
        first = specs[0]
        prompts = [spec.prompt for spec in specs for _ in spec.seeds]
        negative_prompts = None
        if any(spec.negative_prompt for spec in specs):
            # An empty negative prompt is what the pipelines use when none is given.
            negative_prompts = [spec.negative_prompt or "" for spec in specs for _ in spec.seeds]
        output = pipeline(
            **self.call_arguments(first, prompts, negative_prompts),
            generator=seeded_generators(specs),
            output_type="np",
            **self.step_arguments(on_step),
        )
        return to_uint8(output.images)
