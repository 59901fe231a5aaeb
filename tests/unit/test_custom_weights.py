"""Loading a custom .safetensors state dict: prefixes stripped, mismatches reported."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from serve_app.models.custom_weights import (
    WeightsReport,
    load_custom_weights,
    strip_known_prefixes,
)


def make_module() -> nn.Module:
    torch.manual_seed(0)
    # Keys: 0.weight (8x4), 0.bias (8), 2.weight (3x8), 2.bias (3), 3.weight (2x3), 3.bias (2)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 2))


@pytest.fixture
def module() -> nn.Module:
    return make_module()


@pytest.fixture
def checkpoint(tmp_path):
    """Prefixed keys that fit, one extra key, one of the wrong shape, and 3.weight missing."""
    generator = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    tensors = {
        "model.diffusion_model.0.weight": rand(8, 4),
        "module.0.bias": rand(8),
        "2.bias": rand(3),
        "model.3.bias": rand(2),
        "module.2.weight": rand(5, 8),  # wrong shape: the module has 3x8
        "lora_extra.weight": rand(2, 2),  # not in the module
    }
    path = tmp_path / "portrait.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_matching_tensors_are_loaded_with_prefixes_stripped(module, checkpoint):
    path, tensors = checkpoint
    load_custom_weights(module, path, "transformer")
    state = module.state_dict()
    assert torch.equal(state["0.weight"], tensors["model.diffusion_model.0.weight"])
    assert torch.equal(state["0.bias"], tensors["module.0.bias"])
    assert torch.equal(state["2.bias"], tensors["2.bias"])
    assert torch.equal(state["3.bias"], tensors["model.3.bias"])


def test_missing_and_mismatched_tensors_are_left_alone(module, checkpoint):
    before = {key: value.clone() for key, value in module.state_dict().items()}
    load_custom_weights(module, checkpoint[0], "transformer")
    state = module.state_dict()
    assert torch.equal(state["3.weight"], before["3.weight"])
    assert torch.equal(state["2.weight"], before["2.weight"])


def test_report_lists_missing_unexpected_mismatched_exactly(module, checkpoint):
    path, _ = checkpoint
    report = load_custom_weights(module, path, "unet")
    assert isinstance(report, WeightsReport)
    assert report.path == str(path)
    assert report.component == "unet"
    assert report.loaded == 4
    assert report.missing == ["3.weight"]
    assert report.unexpected == ["lora_extra.weight"]
    assert report.mismatched == ["2.weight (5, 8) != (3, 8)"]
    assert not report.clean


def test_summary_mentions_counts(module, checkpoint):
    path, _ = checkpoint
    summary = load_custom_weights(module, path, "transformer").summary()
    assert summary.startswith(f"4 tensors loaded into transformer from {path}")
    assert "1 missing: 3.weight" in summary
    assert "1 unexpected: lora_extra.weight" in summary
    assert "1 shape-mismatched: 2.weight (5, 8) != (3, 8)" in summary


def test_summary_shortens_long_lists():
    report = WeightsReport(path="p", component="c", missing=[f"k{i}" for i in range(8)])
    summary = report.summary(limit=3)
    assert "8 missing: k0, k1, k2 (+5 more)" in summary
    assert "k3" not in summary


def test_exact_checkpoint_is_clean(module, tmp_path):
    source = make_module()
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(1.0)
    path = tmp_path / "exact.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))
    report = load_custom_weights(module, path, "transformer")
    assert report.clean
    assert report.loaded == 6
    assert "missing" not in report.summary()
    for key, value in source.state_dict().items():
        assert torch.equal(module.state_dict()[key], value)


def test_tensors_are_cast_to_the_module_dtype(module, tmp_path):
    half = torch.full((8, 4), 0.5, dtype=torch.float16)
    path = tmp_path / "half.safetensors"
    save_file({"0.weight": half}, str(path))
    load_custom_weights(module, path, "transformer")
    weight = module.state_dict()["0.weight"]
    assert weight.dtype == torch.float32
    assert torch.equal(weight, half.float())


def test_strip_prefers_key_the_module_already_knows():
    tensor = torch.zeros(1)
    expected = {"model.a", "a", "b"}
    cleaned = strip_known_prefixes(
        {"model.a": tensor, "unet.b": tensor, "module.c": tensor}, expected
    )
    assert set(cleaned) == {"model.a", "b", "module.c"}
