"""The tiny VAE every family's offline builder shares."""

from __future__ import annotations

from typing import Any

from diffusers import AutoencoderKL


def tiny_vae(latent_channels: int, **config: Any) -> AutoencoderKL:
    """Four blocks like the real VAEs, so the 8x spatial factor is the real one."""
    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        norm_num_groups=4,
        layers_per_block=1,
        **config,
    )
