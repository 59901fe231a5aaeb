"""From a model entry to a ready pipeline: tiny builds, dtype, device, offload, compile,
custom weights."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from serve_app.config import ModelConfig
from serve_app.families import FAMILIES
from serve_app.models.adapters import denoiser_name, prepare_hotswap_slot
from serve_app.models.base import PipelineFamily
from serve_app.models.custom_weights import WeightsReport, load_custom_weights
from serve_app.models.vision_chat import ChatModel, VisionChatFamily

logger = logging.getLogger(__name__)

# Bump when a tiny builder changes, so stale cached builds are not reused.
TINY_BUILD_VERSION = "v1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    pipeline: Any
    family: PipelineFamily
    device: str
    dtype: str
    checkpoint: str
    weights_report: WeightsReport | None = None


def family_for(name: str) -> Any:
    """The family's code, imported here only: the Gateway never loads torch."""
    module_name, class_name = FAMILIES[name].implementation.split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def ensure_tiny_checkpoint(family: PipelineFamily | VisionChatFamily, cache_dir: Path) -> Path:
    """Build the family's tiny model once; concurrent replicas race safely via rename."""
    target = cache_dir / f"{family.name}-{TINY_BUILD_VERSION}"
    marker = getattr(family, "checkpoint_marker", "model_index.json")
    if (target / marker).exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".build-{family.name}-"))
    try:
        family.build_tiny(staging)
        os.rename(staging, target)
    except OSError:
        if not (target / marker).exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def pick_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was configured but no CUDA device is visible")
    return setting


def placement(
    config: ModelConfig, family: PipelineFamily | VisionChatFamily, tiny_cache: Path
) -> tuple[str, str, str]:
    """(checkpoint, device, dtype) of a model entry: its tiny build made if it names one."""
    if config.path.startswith("tiny:"):
        checkpoint = str(ensure_tiny_checkpoint(family, tiny_cache))
    else:
        checkpoint = config.path  # a local folder or a hub id
    device = pick_device(config.device)
    dtype = config.dtype
    if device == "cpu" and dtype != "float32":
        # Half precision on CPU is slow or unsupported for several ops.
        logger.warning("%s: %s on CPU, using float32 instead", config.name, dtype)
        dtype = "float32"
    return checkpoint, device, dtype


def load_model(config: ModelConfig, tiny_cache: Path) -> LoadedModel:
    family = family_for(config.family)
    checkpoint, device, dtype = placement(config, family, tiny_cache)
    pipeline = family.load(checkpoint, DTYPES[dtype])
    pipeline.set_progress_bar_config(disable=True)

    report = None
    if config.custom_weights is not None:
        report = _apply_custom_weights(pipeline, config)

    if device == "cuda" and config.offload == "model":
        pipeline.enable_model_cpu_offload()
    elif device == "cuda" and config.offload == "sequential":
        pipeline.enable_sequential_cpu_offload()
    else:
        pipeline.to(device)

    if device == "cuda":
        _tune_for_cuda(pipeline)
    if config.compile:
        if config.hot_swaps_adapters:
            assert config.adapters.hotswap_rank is not None
            prepare_hotswap_slot(pipeline, config.adapters.hotswap_rank)
        denoiser = denoiser_name(pipeline)
        # Compiled on the first calls of each shape: the replica's warm-up makes them
        # (warmup.sizes x warmup.batch_sizes) before it takes traffic.
        compiled = torch.compile(getattr(pipeline, denoiser), backend=config.compile_backend)
        setattr(pipeline, denoiser, compiled)
    return LoadedModel(pipeline, family, device, dtype, checkpoint, report)


@dataclass
class LoadedChatModel:
    chat: ChatModel
    family: VisionChatFamily
    device: str
    dtype: str
    checkpoint: str


def load_chat_model(config: ModelConfig, tiny_cache: Path) -> LoadedChatModel:
    """A vision-chat model and its processor, on the configured device and dtype."""
    family: VisionChatFamily = family_for(config.family)
    checkpoint, device, dtype = placement(config, family, tiny_cache)
    chat = family.load(checkpoint, DTYPES[dtype])
    chat.model.to(device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if config.compile:
        chat.model.forward = torch.compile(
            chat.model.forward, dynamic=True, backend=config.compile_backend
        )
    return LoadedChatModel(chat, family, device, dtype, checkpoint)


def _tune_for_cuda(pipeline: Any) -> None:
    """Settings that make the same work faster on a card and change no result beyond
    rounding. Attention already runs through SDPA (diffusers' default processors)."""
    # TF32 tensor cores for the float32 matmuls and convolutions left (VAEs kept in fp32).
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    # cuDNN's convolutions run fastest on NHWC: the UNet's and the VAE's.
    for name in ("unet", "vae"):
        module = getattr(pipeline, name, None)
        if isinstance(module, torch.nn.Module):
            module.to(memory_format=torch.channels_last)


def _apply_custom_weights(pipeline: Any, config: ModelConfig) -> WeightsReport:
    weights = config.custom_weights
    assert weights is not None
    component = getattr(pipeline, weights.component, None)
    if not isinstance(component, torch.nn.Module):
        raise ValueError(f"{config.name}: pipeline has no component {weights.component!r}")
    report = load_custom_weights(component, Path(weights.path).expanduser(), weights.component)
    logger.info("%s: %s", config.name, report.summary())
    if weights.strict and not report.clean:
        raise ValueError(f"{config.name}: custom weights do not fit: {report.summary()}")
    return report
