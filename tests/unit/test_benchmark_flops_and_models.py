"""Real-size architectures (counted on the meta device, no memory) and FLOP counting on a
real tiny pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.configs import load_application, model_config
from benchmarks.flops import matmul_peak_tflops, pipeline_flops
from benchmarks.real_models import REAL_MODELS, build_components, parameter_count
from serve_app.models.loading import load_model
from serve_app.models.spec import GenerationSpec

REPO = Path(__file__).resolve().parents[2]

# Published parameter counts of the real checkpoints' components.
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863},
    "sdxl": {"unet": 2_567_463_684, "text_encoder_2": 694_659_840, "vae": 83_653_863},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_stable_diffusion_architectures_match_published_sizes(name):
    parts = build_components(name, "meta")
    for component, expected in PUBLISHED[name].items():
        assert parameter_count(parts[component]) == expected, component


def test_z_image_turbo_is_a_6b_dit_with_a_4b_text_encoder():
    parts = build_components("z-image-turbo", "meta")
    assert 6.1e9 < parameter_count(parts["transformer"]) < 6.2e9
    assert 4.0e9 < parameter_count(parts["text_encoder"]) < 4.05e9  # Qwen3-4B, tied embeddings
    assert parts["transformer"].config.in_channels == parts["vae"].config.latent_channels == 16


def test_every_real_model_builds_its_pipelines_parts():
    for name, (_, pipeline_class) in REAL_MODELS.items():
        parts = build_components(name, "meta")
        required, _ = pipeline_class._get_signature_keys(pipeline_class)
        expected = set(required) - set(pipeline_class._optional_components)
        assert expected <= set(parts), (name, expected - set(parts))


@pytest.fixture(scope="module")
def sd_tiny(tiny_cache):
    config = model_config(load_application(REPO / "configs/local.yaml"), "sd-tiny")
    return load_model(config, tiny_cache)


def unet_flops(loaded, steps: int, guidance: float, seeds=(0,)) -> tuple[int, dict[str, int]]:
    spec = GenerationSpec("benchmark prompt", None, 64, 64, steps, guidance, seeds)
    return pipeline_flops(loaded.family, loaded.pipeline, spec)


def test_flops_follow_steps_and_classifier_free_guidance(sd_tiny):
    total, parts = unet_flops(sd_tiny, steps=2, guidance=5.0)
    assert total == sum(parts.values()) > 0
    assert {"CLIPTextModel", "UNet2DConditionModel", "Decoder"} <= set(parts)
    _, four_steps = unet_flops(sd_tiny, steps=4, guidance=5.0)
    assert four_steps["UNet2DConditionModel"] == 2 * parts["UNet2DConditionModel"]
    assert four_steps["Decoder"] == parts["Decoder"]  # decoded once, whatever the steps
    _, no_cfg = unet_flops(sd_tiny, steps=2, guidance=1.0)  # guidance <= 1 turns CFG off
    assert 2 * no_cfg["UNet2DConditionModel"] == parts["UNet2DConditionModel"]
    # Per image: two images in one call count the same per image as one alone.
    assert unet_flops(sd_tiny, steps=2, guidance=5.0, seeds=(0, 1))[0] == total


def test_cpu_attention_is_counted(sd_tiny):
    # Without our formula for the CPU attention kernel the count would be lower.
    from torch.utils.flop_counter import FlopCounterMode

    spec = GenerationSpec("benchmark prompt", None, 64, 64, 1, 5.0, (0,))
    plain = FlopCounterMode(display=False)
    with plain, torch.inference_mode():
        sd_tiny.family.run(sd_tiny.pipeline, [spec])
    assert pipeline_flops(sd_tiny.family, sd_tiny.pipeline, spec)[0] > plain.get_total_flops()


def test_matmul_peak_on_cpu_is_float32():
    tflops, dtype = matmul_peak_tflops("cpu", size=128, repeats=2)
    assert tflops > 0 and dtype == "float32"
