"""Partial images: previews of images while they form, decoded from the latents of a
denoising step.

A preview costs one decode of the step's latents at a reduced size (`previews.scale`),
by the model's own VAE or by a small preview decoder (diffusers `AutoencoderTiny`, e.g.
TAESD) where the model entry names one. Decoding and encoding run on a worker thread of
their own, so the denoising loop only copies the latents it hands over; a call's results
wait for its previews to be delivered, so a stream always shows them before its final
image (unless the request was cancelled meanwhile). Nothing here touches the latents or
the random generators of the call, so a streamed image is byte-identical to the same
request not streamed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from serve_app.config import PreviewConfig
from serve_app.images import encode_image
from serve_app.models.base import PipelineFamily
from serve_app.models.spec import PartialImage

logger = logging.getLogger(__name__)

TINY_DECODER = "tiny"


def preview_steps(steps: int, partial_images: int) -> tuple[int, ...]:
    """The denoising steps (1-based, of `steps`) after which a request's previews are
    made: evenly spread, never the last step (that is the final image). Fewer steps than
    previews asked give fewer previews."""
    if partial_images <= 0 or steps <= 1:
        return ()
    chosen = {
        min(steps - 1, max(1, math.ceil(steps * (i + 1) / (partial_images + 1))))
        for i in range(partial_images)
    }
    return tuple(sorted(chosen))


def tiny_preview_decoder(latent_channels: int, folder: Path) -> Path:
    """A random-weight AutoencoderTiny for `latent_channels`, saved like a checkpoint
    (offline tests of the preview-decoder path; its previews are noise)."""
    from diffusers import AutoencoderTiny

    marker = folder / "config.json"
    if not marker.exists():
        torch.manual_seed(0)
        AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
            latent_channels=latent_channels,
        ).save_pretrained(folder)
    return folder


class PreviewDecoder:
    """Turns a step's latents into small uint8 pictures, by the family's rules."""

    def __init__(
        self,
        family: PipelineFamily,
        pipeline: Any,
        config: PreviewConfig,
        device: str,
        tiny_cache: Path,
    ):
        self.family = family
        self.pipeline = pipeline
        self.scale = config.scale
        self.decoder: Any = None
        if config.decoder is not None:
            self.decoder = self._load_decoder(config.decoder, device, tiny_cache)

    def _load_decoder(self, path: str, device: str, tiny_cache: Path) -> Any:
        from diffusers import AutoencoderTiny

        if path == TINY_DECODER:
            channels = self.pipeline.vae.config.latent_channels
            path = str(tiny_preview_decoder(channels, tiny_cache / f"preview-decoder-{channels}"))
        decoder = AutoencoderTiny.from_pretrained(path, torch_dtype=self.pipeline.vae.dtype)
        return decoder.to(device).eval()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, height: int, width: int) -> list[np.ndarray]:
        """Latents of some images of one call (as the step callback sees them) -> HxWx3
        uint8 previews at `scale` of the final size."""
        latents = self.family.unpack_latents(self.pipeline, latents, height, width)
        if self.scale < 1:
            latents = _shrink(latents, self.scale)
        vae = self.decoder if self.decoder is not None else self.pipeline.vae
        inputs = self.family.vae_input(self.pipeline, latents, vae)
        images = vae.decode(inputs.to(vae.dtype), return_dict=False)[0]
        if images.ndim == 5:  # video VAEs (Qwen-Image) decode one frame
            images = images[:, :, 0]
        pixels = (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return list((pixels * 255).round().astype(np.uint8))


def _shrink(latents: torch.Tensor, scale: float) -> torch.Tensor:
    """Fewer latent pixels, so the decode costs about scale² of a full one."""
    frames = latents.ndim == 5
    if frames:
        latents = latents[:, :, 0]
    height = max(1, round(latents.shape[-2] * scale))
    width = max(1, round(latents.shape[-1] * scale))
    small = F.interpolate(latents.float(), size=(height, width), mode="area").to(latents.dtype)
    return small.unsqueeze(2) if frames else small


@dataclass(frozen=True)
class PreviewOrder:
    """One preview to make: which image and preview it is, how to encode it, and where it
    goes."""

    deliver: Callable[[PartialImage], None]
    index: int
    partial_image_index: int
    step: int
    steps: int
    output_format: str
    output_compression: int | None


class PreviewWorker:
    """One thread that decodes and encodes previews in the order they were asked for."""

    def __init__(
        self,
        decoder: PreviewDecoder,
        on_seconds: Callable[[float, int], None],
        inline: bool = False,
    ):
        self.decoder = decoder
        self._on_seconds = on_seconds
        # Inline: on the denoising thread (CPU offload moves modules between devices as
        # they run, which a second thread must not race).
        self._inline = inline
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="previews")
        self._pending: list[Future] = []
        self._lock = threading.Lock()

    def submit(
        self, latents: torch.Tensor, height: int, width: int, orders: list[PreviewOrder]
    ) -> None:
        """Decode `latents` (already copied; one row per order) later and deliver each
        preview as its order says."""
        if self._inline:
            self._make(latents, height, width, orders)
            return
        future = self._pool.submit(self._make, latents, height, width, orders)
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()] + [future]

    def _make(
        self, latents: torch.Tensor, height: int, width: int, orders: list[PreviewOrder]
    ) -> None:
        started = time.perf_counter()
        try:
            pictures = self.decoder.decode(latents, height, width)
            for order, pixels in zip(orders, pictures, strict=True):
                order.deliver(
                    PartialImage(
                        index=order.index,
                        partial_image_index=order.partial_image_index,
                        data=encode_image(pixels, order.output_format, order.output_compression),
                        width=int(pixels.shape[1]),
                        height=int(pixels.shape[0]),
                        step=order.step,
                        steps=order.steps,
                        output_format=order.output_format,
                    )
                )
        except Exception:  # a preview is never worth a failed request
            logger.exception("preview decode failed")
            return
        self._on_seconds(time.perf_counter() - started, len(orders))

    def settle(self, drop: bool = False) -> None:
        """At the end of a call: wait for its previews (`drop`: cancel those not
        started, when nobody is left to see them)."""
        with self._lock:
            pending, self._pending = self._pending, []
        if drop:
            for future in pending:
                future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # waits; errors were logged by _make
