"""Per-request LoRA adapters on one pipeline: loaded on first use, the most recent
`max_loaded` kept, the least recently used deleted (its weights freed) when another is
needed, and the set a pipeline call asks for made active just before it runs.

Adapters are loaded through diffusers' LoRA loader (`load_lora_weights`), under a name
of our own, so catalog names never meet peft's rules for module names. A set applied at
scale 0 leaves every weight's output as it was: the image equals the base model's.

A compiled denoiser would recompile for every new adapter (new layers) and every new
scale (a Python float in its graph). There, `prepare_hotswap_slot` gives it, before it is
compiled, one adapter slot over every Linear layer, with zero weights and tensor scales;
`HotSwapAdapters` copies an adapter's weights into the slot (`hotswap=True`) and sets the
scales in place, so neither changes what the compiled graph sees.
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
from safetensors import safe_open

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


def denoiser_of(pipeline: Any) -> torch.nn.Module:
    """The pipeline's denoiser itself, under torch.compile's wrapper if it has one."""
    module = getattr(pipeline, denoiser_name(pipeline))
    return getattr(module, "_orig_mod", module)


def save_tiny_adapter(pipeline: Any, folder: Path, seed: int) -> None:
    """A random rank-4 LoRA over the denoiser's attention projections, saved as diffusers
    saves a trained one, so it loads through the same path as a real adapter."""
    name = denoiser_name(pipeline)
    generator = torch.Generator().manual_seed(seed)
    layers: dict[str, torch.Tensor] = {}
    for module_name, module in denoiser_of(pipeline).named_modules():
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


def weights_of(
    use: AdapterUse, pipeline: Any, model_name: str, tiny_root: Path
) -> tuple[str, dict[str, str]]:
    """Where `load_lora_weights` finds an adapter, and its options: a `tiny:<seed>` one is
    built on first use under the tiny-model cache; a `.safetensors` file is read from its
    folder by name."""
    source, weight_name = use.source, use.weight_name
    if source.startswith(TINY_PREFIX):
        seed = int(source[len(TINY_PREFIX) :])
        folder = tiny_root / "loras" / model_name / f"{use.name}-{seed}"
        if not (folder / "pytorch_lora_weights.safetensors").exists():
            save_tiny_adapter(pipeline, folder, seed)
        source = str(folder)
    elif Path(source).is_file():
        source, weight_name = str(Path(source).parent), Path(source).name
    return source, ({"weight_name": weight_name} if weight_name else {})


def unavailable(use: AdapterUse, model_name: str, why: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"LoRA adapter {use.name!r} could not be loaded on model {model_name!r}{why}; "
        "the operator must fix its catalog entry",
        code=ErrorCode.LORA_UNAVAILABLE,
    )


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
            raise unavailable(use, self.model_name, "") from error
        self._loaded[key] = use
        self._active = None  # loading may change which adapters are active
        self.loads += 1
        self.metrics.lora_event(self.model_name, use.name, "loaded")
        logger.info("%s: LoRA %r loaded (%d held)", self.model_name, use.name, len(self._loaded))

    def _load(self, use: AdapterUse, key: str) -> None:
        source, options = weights_of(use, self.pipeline, self.model_name, self.tiny_root)
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


HOTSWAP_SLOT = "hotswap_slot"


def prepare_hotswap_slot(pipeline: Any, rank: int) -> None:
    """Before the denoiser is compiled: one adapter slot over every Linear layer, of rank
    `rank`, zero weights (the base model's output), its scales turned into tensors. An
    adapter that adapts those layers, or some of them, then swaps in without a change the
    compiled graph could see."""
    denoiser = denoiser_of(pipeline)
    layers: dict[str, torch.Tensor] = {}
    for module_name, module in denoiser.named_modules():
        if isinstance(module, torch.nn.Linear):
            weight = module.weight
            layers[f"{module_name}.lora_A.weight"] = weight.new_zeros(rank, module.in_features)
            layers[f"{module_name}.lora_B.weight"] = weight.new_zeros(module.out_features, rank)
    denoiser.enable_lora_hotswap(target_rank=rank)
    denoiser.load_lora_adapter(layers, prefix=None, adapter_name=HOTSWAP_SLOT)


def highest_rank(source: str, weight_name: str | None) -> int | None:
    """The highest rank in an adapter's local weights file, read from its header alone;
    None where there is no local file to read (a hub id)."""
    path = Path(source) / (weight_name or "pytorch_lora_weights.safetensors")
    if not path.is_file() or path.suffix != ".safetensors":
        return None
    with safe_open(path, framework="pt") as weights:
        # A LoRA's down (A) matrix is rank x in_features.
        return max(
            (
                weights.get_slice(key).get_shape()[0]
                for key in weights.keys()  # noqa: SIM118 (a safetensors file, not a dict)
                if "lora_A" in key or "lora_down" in key
            ),
            default=None,
        )


class HotSwapAdapters:
    """The adapter of a compiled denoiser: one at a time, in the slot `prepare_hotswap_slot`
    made. Swapping one in copies its weights over the last one's (freeing nothing and
    allocating nothing); a request without one runs with the slot at scale 0."""

    def __init__(
        self,
        pipeline: Any,
        slot_rank: int,
        model_name: str,
        tiny_root: Path,
        metrics: ServiceMetrics | None = None,
    ):
        self.pipeline = pipeline
        self.slot_rank = slot_rank
        self.metrics = metrics or ServiceMetrics()
        self.model_name = model_name
        self.tiny_root = tiny_root
        self._slot: AdapterUse | None = None
        # Each layer's scale at 1.0 for the adapter in the slot (its alpha over its rank).
        self._unit_scales: dict[torch.nn.Module, float] = {}
        self._scale: float | None = None
        self.loads = 0
        self.evictions = 0
        self._read_unit_scales()

    def names(self) -> list[str]:
        return [self._slot.name] if self._slot is not None else []

    def activate(self, uses: tuple[AdapterUse, ...]) -> None:
        if len(uses) > 1:  # the config allows one (max_per_request: 1)
            raise ValueError(f"{self.model_name}: one adapter at a time when hot-swapping")
        use = uses[0] if uses else None
        if use is not None and (self._slot is None or adapter_id(self._slot) != adapter_id(use)):
            self._swap_in(use)
        self._set_scale(use.scale if use is not None else 0.0)

    def _swap_in(self, use: AdapterUse) -> None:
        source, options = weights_of(use, self.pipeline, self.model_name, self.tiny_root)
        try:
            rank = highest_rank(source, options.get("weight_name"))
            if rank is not None and rank > self.slot_rank:
                # peft would swap the larger tensors in whole: a recompile, or worse.
                raise ValueError(f"rank {rank} > adapters.hotswap_rank {self.slot_rank}")
            self.pipeline.load_lora_weights(
                source, adapter_name=HOTSWAP_SLOT, hotswap=True, **options
            )
        except Exception as error:
            # Some layers may hold the new adapter's weights now: the slot stays off
            # (scale 0) until a swap succeeds.
            logger.exception("%s: LoRA %r did not swap in", self.model_name, use.name)
            self._slot, self._scale = None, None
            self._set_scale(0.0)
            raise unavailable(
                use,
                self.model_name,
                " (a compiled model takes adapters of its denoiser's Linear layers, "
                "of rank at most adapters.hotswap_rank)",
            ) from error
        if self._slot is not None:
            self.evictions += 1
            self.metrics.lora_event(self.model_name, self._slot.name, "evicted")
        self._slot, self._scale = use, None
        self._read_unit_scales()
        self.loads += 1
        self.metrics.lora_event(self.model_name, use.name, "loaded")
        logger.info("%s: LoRA %r swapped in", self.model_name, use.name)

    def _read_unit_scales(self) -> None:
        """After a swap, each layer's scale is the adapter's own (alpha / rank)."""
        self._unit_scales = {
            module: float(module.scaling[HOTSWAP_SLOT])
            for module in denoiser_of(self.pipeline).modules()
            if HOTSWAP_SLOT in getattr(module, "scaling", {})
        }

    def _set_scale(self, scale: float) -> None:
        if scale == self._scale:
            return
        for module, unit in self._unit_scales.items():
            module.scaling[HOTSWAP_SLOT].fill_(unit * scale)
        self._scale = scale
