"""The text-to-image engine in-process (no Ray): loading, custom weights, batch grouping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from serve_app.config import ModelConfig
from serve_app.models.engine import ModelEngine
from serve_app.models.spec import GenerationSpec


def tiny_sd(**overrides) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "sd-unit",
            "family": "stable-diffusion",
            "path": "tiny:stable-diffusion",
            "dtype": "float32",
            "device": "cpu",
            "defaults": {"size": "64x64", "steps": 2, "guidance_scale": 5.0},
            "limits": {"max_n": 4, "min_side": 64, "max_side": 256, "max_pixels": 65536},
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def engine(tiny_cache):
    return ModelEngine(tiny_sd(), tiny_cache)


def spec(prompt="a cup", width=64, height=64, seeds=(1,), steps=2) -> GenerationSpec:
    return GenerationSpec(prompt, None, width, height, steps, 5.0, tuple(seeds))


def test_tiny_build_is_reused_and_identical_across_loads(engine, tiny_cache):
    again = ModelEngine(tiny_sd(), tiny_cache)
    first = engine.run_batch([spec(seeds=(5,))])[0].pixels[0]
    second = again.run_batch([spec(seeds=(5,))])[0].pixels[0]
    assert np.array_equal(first, second)
    # Built once, with no leftover staging folder (other families share the cache).
    built = [p.name for p in tiny_cache.iterdir() if "stable-diffusion" in p.name]
    assert built == ["stable-diffusion-v1"]


def test_mixed_sizes_run_as_separate_calls_in_request_order(engine):
    results = engine.run_batch(
        [
            spec(seeds=(1, 2)),
            spec(width=128, seeds=(3,)),
            spec(seeds=(4,)),
        ]
    )
    assert [r.batch_images for r in results] == [3, 1, 3]
    assert [len(r.pixels) for r in results] == [2, 1, 1]
    assert results[1].pixels[0].shape == (64, 128, 3)
    assert results[0].pixels[0].shape == (64, 64, 3)


def test_failing_group_does_not_fail_the_others(engine):
    results = engine.run_batch([spec(width=70), spec()])  # 70 is no multiple of 8
    assert isinstance(results[0], ValueError)
    assert not isinstance(results[1], Exception)
    assert results[1].pixels[0].shape == (64, 64, 3)


def test_encode_gives_one_file_per_image_with_its_seed(engine):
    request = spec(seeds=(8, 9))
    images = engine.encode(request, engine.run_batch([request])[0])
    assert [image.seed for image in images] == [8, 9]
    assert all(image.data.startswith(b"\x89PNG") for image in images)


def test_custom_weights_load_into_the_unet_with_prefixes_stripped(engine, tiny_cache, tmp_path):
    unet = engine.model.pipeline.unet.state_dict()
    changed = {f"model.diffusion_model.{k}": torch.full_like(v, 0.01) for k, v in unet.items()}
    dropped = sorted(changed)[0]
    del changed[dropped]
    changed["model.diffusion_model.extra.weight"] = torch.zeros(3)
    path = tmp_path / "style.safetensors"
    save_file(changed, str(path))

    custom = ModelEngine(
        tiny_sd(custom_weights={"path": str(path), "component": "unet"}), tiny_cache
    )
    report = custom.model.weights_report
    assert report.loaded == len(unet) - 1
    assert report.missing == [dropped.removeprefix("model.diffusion_model.")]
    assert report.unexpected == ["model.diffusion_model.extra.weight"]
    loaded = custom.model.pipeline.unet.state_dict()
    key = sorted(unet)[1]
    assert torch.all(loaded[key] == 0.01)
    assert "custom_weights" in custom.health()


def test_strict_custom_weights_refuse_a_partial_file(tiny_cache, tmp_path):
    path = tmp_path / "partial.safetensors"
    save_file({"conv_in.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="do not fit"):
        ModelEngine(
            tiny_sd(custom_weights={"path": str(path), "component": "unet", "strict": True}),
            tiny_cache,
        )


def test_job_specs_report_every_step_and_plain_requests_none(tiny_cache, store_url):
    from dataclasses import replace

    from serve_app.jobs.progress import ProgressReporter
    from serve_app.jobs.records import NewJob
    from serve_app.jobs.store import JobStore

    store = JobStore(store_url)
    store.create_schema()
    store.create_jobs(
        [NewJob(id="job_progress", tenant="t", type="image_generation", request={})],
        max_attempts=1,
    )
    store.claim_jobs("w", limit=1, lease_s=60)
    seen: list[tuple[list[str], int, int]] = []
    recorder = ProgressReporter(store_url, interval_s=0)

    def sink(job_ids, step, total):
        seen.append((job_ids, step, total))
        recorder(job_ids, step, total)

    engine = ModelEngine(tiny_sd(), tiny_cache, progress=sink)
    engine.run_batch([spec(steps=3)])
    assert seen == []
    engine.run_batch([replace(spec(steps=3), job_id="job_progress"), spec(steps=3)])
    assert seen == [(["job_progress"], step, 3) for step in (1, 2, 3)]
    job = store.get_job("job_progress")
    assert (job.progress_step, job.progress_total) == (3, 3)
    store.dispose()


def test_a_request_weighs_its_images_pixels_and_steps_against_the_default(engine):
    # sd-unit's defaults: 64x64, 2 steps; budget: max_batch_size images of that work.
    assert engine.batch_budget().max_images == engine.config.batching.max_batch_size
    assert engine.batch_budget().max_work == engine.config.batching.max_batch_size
    default = engine.batch_cost(spec())
    assert (default.images, default.work) == (1, 1.0)
    assert engine.batch_cost(spec(width=128, height=128)).work == 4.0
    assert engine.batch_cost(spec(seeds=(1, 2, 3), steps=4)).work == 6.0
    # Equal keys share calls; other sizes do not.
    assert engine.batch_cost(spec(seeds=(9,))).key == default.key
    assert engine.batch_cost(spec(width=128)).key != default.key


def test_an_explicit_work_budget_is_counted_in_default_images(tiny_cache):
    config = tiny_sd(batching={"max_batch_size": 8, "max_batch_work": 2.5})
    engine = ModelEngine(config, tiny_cache)
    assert engine.batch_budget().max_images == 8
    assert engine.batch_budget().max_work == 2.5


def test_warmup_runs_every_configured_shape_and_batch(tiny_cache):
    config = tiny_sd(warmup={"sizes": ["64x64", "128x64"], "batch_sizes": [1, 2]})
    assert ModelEngine(config, tiny_cache).warmup() == [
        (64, 64, 1),
        (64, 64, 2),
        (128, 64, 1),
        (128, 64, 2),
    ]


def test_warmup_starts_no_call_after_its_time_budget(tiny_cache, caplog):
    config = tiny_sd(warmup={"batch_sizes": [1, 2, 4], "max_s": 1e-9})
    with caplog.at_level("WARNING"):
        assert ModelEngine(config, tiny_cache).warmup() == [(64, 64, 1)]
    assert "warm-up stopped" in caplog.text


def test_a_compiled_model_warms_its_largest_batch_too():
    assert tiny_sd().warmup_shapes() == [(64, 64, 1)]
    compiled = tiny_sd(compile=True, batching={"max_batch_size": 4})
    assert compiled.warmup_shapes() == [(64, 64, 1), (64, 64, 4)]
    with pytest.raises(ValueError, match="warmup.batch_sizes"):
        tiny_sd(warmup={"batch_sizes": [8]})
    with pytest.raises(ValueError, match="warmup size"):
        tiny_sd(warmup={"sizes": ["1024x1024"]})


def test_attention_runs_through_sdpa_and_the_card_settings_change_no_image(tiny_cache):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from serve_app.models.loading import _tune_for_cuda

    engine = ModelEngine(tiny_sd(), tiny_cache)
    unet = engine.model.pipeline.unet
    assert {type(p) for p in unet.attn_processors.values()} == {AttnProcessor2_0}
    before = engine.run_batch([spec(seeds=(3,))])[0].pixels[0].astype(int)
    _tune_for_cuda(engine.model.pipeline)  # channels-last UNet and VAE (CPU runs it too)
    conv = unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    after = engine.run_batch([spec(seeds=(3,))])[0].pixels[0].astype(int)
    assert np.abs(before - after).max() <= 2
