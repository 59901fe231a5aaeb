"""Per-request LoRA adapters on one pipeline: loaded on first use, the most recent
`max_loaded` kept, the least recently used deleted (its weights freed) when another is
needed, and the set a pipeline call asks for made active just before it runs.

Adapters are loaded through diffusers' LoRA loader (`load_lora_weights`), under a name
of our own, so catalog names never meet peft's rules for module names. A set applied at
scale 0 leaves every weight's output as it was: the image equals the base model's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from serve_app.errors import ErrorCode, ServiceUnavailableError
from serve_app.models.spec import AdapterUse
from serve_app.observability.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"
# The attention projections a tiny adapter adapts (every family's denoiser has them).
TINY_TARGETS = ("to_q", "to_k", "to_v")
TINY_RANK = 4


def adapter_id(use: AdapterUse) -> str:
    """The name the pipeline knows an adapter by: fixed by what is loaded, and a valid
    module attribute name whatever the catalog calls it."""
    identity = f"{use.name}\0{use.source}\0{use.weight_name or ''}"
    return "lora_" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def denoiser_name(pipeline: Any) -> str:
    return "unet" if getattr(pipeline, "unet", None) is not None else "transformer"


def save_tiny_adapter(pipeline: Any, folder: Path, seed: int) -> None:
    """A random rank-4 LoRA over the denoiser's attention projections, saved as diffusers
    saves a trained one, so it loads through the same path as a real adapter."""
    name = denoiser_name(pipeline)
    generator = torch.Generator().manual_seed(seed)
    layers: dict[str, torch.Tensor] = {}
    for module_name, module in getattr(pipeline, name).named_modules():
        # A layer other adapters already wrap keeps its own Linear as `base_layer`.
        module = getattr(module, "base_layer", module)
        if isinstance(module, torch.nn.Linear) and module_name.rsplit(".", 1)[-1] in TINY_TARGETS:
            down = torch.randn(TINY_RANK, module.in_features, generator=generator) * 0.5
            up = torch.randn(module.out_features, TINY_RANK, generator=generator) * 0.5
            layers[f"{module_name}.lora_A.weight"] = down
            layers[f"{module_name}.lora_B.weight"] = up
    # Written aside and renamed into place: replicas sharing the cache never read half.
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, ignore_cleanup_errors=True) as scratch:
        type(pipeline).save_lora_weights(
            scratch, **{f"{name}_lora_layers": layers}, safe_serialization=True
        )
        with contextlib.suppress(OSError):  # another replica was first
            os.rename(scratch, folder)


class LoadedAdapters:
    """The adapters one replica's pipeline holds, least recently used first."""

    def __init__(
        self,
        pipeline: Any,
        max_loaded: int,
        model_name: str,
        tiny_root: Path,
        metrics: ServiceMetrics | None = None,
    ):
        self.pipeline = pipeline
        self.metrics = metrics or ServiceMetrics()
        self.max_loaded = max_loaded
        self.model_name = model_name
        self.tiny_root = tiny_root
        self._loaded: OrderedDict[str, AdapterUse] = OrderedDict()
        self._active: tuple[tuple[str, float], ...] | None = None
        self.loads = 0
        self.evictions = 0

    def names(self) -> list[str]:
        """Catalog names of the adapters loaded now, least recently used first."""
        return [use.name for use in self._loaded.values()]

    def activate(self, uses: tuple[AdapterUse, ...]) -> None:
        """Make `uses` (at their scales) the pipeline's active adapters; none: the base
        model. Called with the pipeline idle (under the engine's call lock)."""
        for use in uses:
            self._ensure_loaded(use, keep={adapter_id(u) for u in uses})
        wanted = tuple((adapter_id(use), use.scale) for use in uses)
        if wanted == self._active:
            return
        if wanted:
            self.pipeline.enable_lora()
            self.pipeline.set_adapters([i for i, _ in wanted], [s for _, s in wanted])
        elif self._loaded:
            self.pipeline.disable_lora()
        self._active = wanted

    def _ensure_loaded(self, use: AdapterUse, keep: set[str]) -> None:
        key = adapter_id(use)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return
        while len(self._loaded) >= self.max_loaded:
            victim = next(k for k in self._loaded if k not in keep)
            self._evict(victim)
        try:
            self._load(use, key)
        except Exception as error:
            logger.exception("%s: LoRA %r did not load", self.model_name, use.name)
            raise ServiceUnavailableError(
                f"LoRA adapter {use.name!r} could not be loaded on model {self.model_name!r}; "
                "the operator must fix its catalog entry",
                code=ErrorCode.LORA_UNAVAILABLE,
            ) from error
        self._loaded[key] = use
        self._active = None  # loading may change which adapters are active
        self.loads += 1
        self.metrics.lora_event(self.model_name, use.name, "loaded")
        logger.info("%s: LoRA %r loaded (%d held)", self.model_name, use.name, len(self._loaded))

    def _load(self, use: AdapterUse, key: str) -> None:
        source, weight_name = use.source, use.weight_name
        if source.startswith(TINY_PREFIX):
            seed = int(source[len(TINY_PREFIX) :])
            folder = self.tiny_root / "loras" / self.model_name / f"{use.name}-{seed}"
            if not (folder / "pytorch_lora_weights.safetensors").exists():
                save_tiny_adapter(self.pipeline, folder, seed)
            source = str(folder)
        elif Path(source).is_file():
            source, weight_name = str(Path(source).parent), Path(source).name
        options = {"weight_name": weight_name} if weight_name else {}
        with warnings.catch_warnings():
            # peft's note that a model holds several adapters: that is the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            self.pipeline.load_lora_weights(source, adapter_name=key, **options)

    def _evict(self, key: str) -> None:
        use = self._loaded.pop(key)
        self.pipeline.delete_adapters(key)
        self._active = None
        self.evictions += 1
        self.metrics.lora_event(self.model_name, use.name, "evicted")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.info("%s: LoRA %r evicted (least recently used)", self.model_name, use.name)
