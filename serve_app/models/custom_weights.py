"""Load a custom `.safetensors` state dict (e.g. a fine-tuned portrait style) into one component.

Checkpoints from training tools carry wrapper prefixes and sometimes layers of another
shape; we strip the prefixes, skip what does not fit, and report all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

KNOWN_PREFIXES = (
    "model.diffusion_model.",
    "diffusion_model.",
    "transformer.",
    "unet.",
    "model.",
    "module.",
)


@dataclass
class WeightsReport:
    path: str
    component: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 5) -> str:
        def few(keys: list[str]) -> str:
            extra = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + extra

        parts = [f"{self.loaded} tensors loaded into {self.component} from {self.path}"]
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape-mismatched", self.mismatched),
        ):
            if keys:
                parts.append(f"{len(keys)} {label}: {few(keys)}")
        return "; ".join(parts)


def strip_known_prefixes(
    state_dict: dict[str, torch.Tensor], expected: set[str]
) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes from keys the module does not know, when the stripped key exists."""
    cleaned = {}
    for key, tensor in state_dict.items():
        if key not in expected:
            for prefix in KNOWN_PREFIXES:
                if key.startswith(prefix) and key[len(prefix) :] in expected:
                    key = key[len(prefix) :]
                    break
        cleaned[key] = tensor
    return cleaned


def load_custom_weights(module: torch.nn.Module, path: Path, component: str) -> WeightsReport:
    report = WeightsReport(path=str(path), component=component)
    own = module.state_dict()
    state_dict = strip_known_prefixes(load_file(str(path)), set(own))
    fitting = {}
    for key, tensor in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != tensor.shape:
            # load_state_dict(strict=False) still raises on shape mismatches.
            report.mismatched.append(f"{key} {tuple(tensor.shape)} != {tuple(own[key].shape)}")
        else:
            fitting[key] = tensor.to(own[key].dtype)
    module.load_state_dict(fitting, strict=False)
    report.loaded = len(fitting)
    report.missing = sorted(set(own) - set(state_dict))
    report.unexpected.sort()
    return report
