"""Every image a request brings, whatever its form, through one path: fetch or decode with
limits, normalise, and size it for the model. Runs in the Gateway and the JobRunner."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import numpy as np
from PIL import Image

from serve_app.config import ImageInputConfig, ModelConfig
from serve_app.errors import ErrorCode, InvalidRequestError
from serve_app.images import (
    ImageLimits,
    decode_base64_image,
    decode_image,
    fit_to_size,
    mask_to_array,
    to_rgb_array,
)
from serve_app.protocol import ImageReference
from serve_app.security.fetch import SafeFetcher
from serve_app.security.ssrf import UrlPolicy
from serve_app.service.sizing import check_size, requested_size, size_for_aspect


@dataclass(frozen=True)
class ImageSource:
    """One image as the request gave it: uploaded bytes, or a JSON reference."""

    param: str
    upload: bytes | None = None
    reference: ImageReference | None = None


@dataclass(frozen=True)
class PreparedImages:
    images: tuple[np.ndarray, ...]
    mask: np.ndarray | None

    @property
    def size(self) -> str:
        height, width = self.images[0].shape[:2]
        return f"{width}x{height}"


class ImageInputs:
    def __init__(self, config: ImageInputConfig):
        self.limits = ImageLimits(
            max_bytes=config.max_bytes,
            max_pixels=config.max_pixels,
            max_side=config.max_side,
            max_exif_bytes=config.max_exif_bytes,
        )
        fetch = config.fetch
        self.fetcher = SafeFetcher(
            UrlPolicy(allow_http=fetch.allow_http, allowlist=fetch.allowed_hosts),
            timeout_s=fetch.timeout_s,
            max_bytes=config.max_bytes,
            max_redirects=fetch.max_redirects,
            ssl_context=ssl.create_default_context(cafile=fetch.ca_file) if fetch.ca_file else None,
        )

    async def load(self, source: ImageSource, *, keep_alpha: bool = False) -> Image.Image:
        """Decoded, oriented, metadata-free pixels; a 4xx ServiceError for anything else."""
        param = source.param
        if source.upload is not None:
            data = source.upload
        else:
            reference = source.reference
            assert reference is not None
            if reference.b64_json is not None:
                return await asyncio.to_thread(
                    decode_base64_image,
                    reference.b64_json,
                    self.limits,
                    param=param,
                    keep_alpha=keep_alpha,
                )
            url = reference.image_url or ""
            if url[:5].lower() == "data:":
                return await asyncio.to_thread(
                    decode_base64_image, url, self.limits, param=param, keep_alpha=keep_alpha
                )
            data = (await self.fetcher.fetch(url, param=param)).data
        return await asyncio.to_thread(
            decode_image, data, self.limits, param=param, keep_alpha=keep_alpha
        )

    async def prepare(
        self,
        model: ModelConfig,
        sources: list[ImageSource],
        mask_source: ImageSource | None,
        size: str,
    ) -> PreparedImages:
        """Load every image and bring it to the model's working size.

        The first image sets the output: `auto` keeps its aspect at the model's default
        area; an explicit size crops it to that aspect (centred) and scales it.
        Reference images after the first keep their own aspect.
        """
        loaded = await asyncio.gather(*(self.load(source) for source in sources))
        mask = None
        if mask_source is not None:
            mask = await self.load(mask_source, keep_alpha=True)
            if mask.size != loaded[0].size:
                raise InvalidRequestError(
                    f"the mask is {mask.width}x{mask.height} but the image is "
                    f"{loaded[0].width}x{loaded[0].height}; they must match",
                    code=ErrorCode.MASK_SIZE_MISMATCH,
                    param="mask",
                )
        multiple = model.traits.size_multiple
        if size == "auto":
            width, height = size_for_aspect(loaded[0].width, loaded[0].height, model, multiple)
        else:
            width, height = requested_size(size)
        check_size(width, height, model, multiple)

        def resize() -> PreparedImages:
            first = to_rgb_array(fit_to_size(loaded[0], width, height))
            others = []
            for image in loaded[1:]:
                w, h = size_for_aspect(image.width, image.height, model, multiple)
                others.append(to_rgb_array(fit_to_size(image, w, h)))
            mask_array = None
            if mask is not None:
                mask_array = mask_to_array(fit_to_size(mask, width, height))
            return PreparedImages((first, *others), mask_array)

        return await asyncio.to_thread(resize)
