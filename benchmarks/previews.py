"""What partial images cost: per preview, and on the request that streams them.

    python -m benchmarks.previews --model sd-tiny --size 256x256 --steps 8 --repeats 15
    python -m benchmarks.previews --config benchmarks/gpu/models.yaml --model sd15 \
        --size 512x512 --steps 25 --decoders vae:0.5 vae:1.0

One model in this process, the service's own engine. Each repeat runs, in rotating order,
the request without previews and the same request with `--partials` previews per image
under each decoder setting (`vae:<scale>`: the model's VAE on latents shrunk to that
scale; `tiny:<scale>`: a random-weight AutoencoderTiny, the shape of TAESD), so every
setting sees the same machine state. Rows: milliseconds per preview (decode and encode,
on the preview thread), the request's time against the one without previews, and one
preview against the full-size VAE decode the pipeline makes at the end.
Writes benchmarks/results/<date>-<device>-previews-<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import torch

from benchmarks.configs import load_application, model_config
from benchmarks.results import current_commit, save_table, slug
from serve_app.config import ModelConfig, PreviewConfig, parse_size
from serve_app.models.engine import ImageTask, ModelEngine
from serve_app.models.previews import PreviewDecoder, PreviewWorker
from serve_app.models.spec import GenerationSpec

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class PreviewRow:
    setting: str
    previews_per_request: int
    preview_ms_median: float
    request_ms_median: float
    plain_request_ms_median: float
    # request with previews / request without, both medians of this run.
    request_ratio: float
    # one preview / one full-size VAE decode of the same latents.
    preview_to_full_decode: float


def decoder_setting(text: str) -> PreviewConfig:
    kind, _, scale = text.partition(":")
    if kind not in ("vae", "tiny"):
        raise SystemExit(f"--decoders: {text!r} is not vae:<scale> or tiny:<scale>")
    return PreviewConfig(scale=float(scale or 0.5), decoder=None if kind == "vae" else "tiny")


def full_decode_ms(
    engine: ModelEngine, spec: GenerationSpec, repeats: int, tiny_cache: Path
) -> float:
    """The pipeline's final decode: the model's VAE on full-size latents."""
    decoder = PreviewDecoder(
        engine.model.family,
        engine.model.pipeline,
        PreviewConfig(scale=1.0),
        engine.model.device,
        tiny_cache,
    )
    vae = engine.model.pipeline.vae
    channels = vae.config.latent_channels
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.randn(1, channels, spec.height // factor, spec.width // factor)
    latents = latents.to(engine.model.device, vae.dtype)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        decoder.decode(latents, spec.height, spec.width)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


def measure(args: argparse.Namespace) -> tuple[dict, list[PreviewRow]]:
    config: ModelConfig = model_config(load_application(Path(args.config)), args.model)
    tiny_cache = Path(args.tiny_cache)
    engine = ModelEngine(config, tiny_cache)
    width, height = parse_size(args.size)
    spec = GenerationSpec(
        "benchmark prompt", None, width, height, args.steps, config.defaults.guidance_scale, (1,)
    )
    settings = {text: decoder_setting(text) for text in args.decoders}
    workers = {}
    preview_ms: dict[str, list[float]] = {text: [] for text in settings}
    for text, setting in settings.items():
        decoder = PreviewDecoder(
            engine.model.family,
            engine.model.pipeline,
            setting,
            engine.model.device,
            tiny_cache,
        )

        def record(seconds: float, count: int, text: str = text) -> None:
            preview_ms[text].extend([seconds * 1000 / count] * count)

        workers[text] = PreviewWorker(decoder, record)

    request_ms: dict[str, list[float]] = {"plain": [], **{text: [] for text in settings}}
    order = ["plain", *settings]
    engine.run_batch([spec])  # lazy initialisation, autotuning
    for repeat in range(args.repeats):
        rotated = order[repeat % len(order) :] + order[: repeat % len(order)]
        for mode in rotated:
            task = ImageTask(spec)
            if mode != "plain":
                engine.previews = workers[mode]
                task = ImageTask(
                    GenerationSpec(**{**asdict(spec), "partial_images": args.partials}),
                    on_partial=lambda _partial: None,
                )
            started = time.perf_counter()
            result = engine.run_batch([task])[0]
            if isinstance(result, Exception):
                raise result
            request_ms[mode].append((time.perf_counter() - started) * 1000)

    full_ms = full_decode_ms(engine, spec, args.repeats, tiny_cache)
    plain = statistics.median(request_ms["plain"])
    rows = []
    for text in settings:
        per_preview = statistics.median(preview_ms[text])
        with_previews = statistics.median(request_ms[text])
        rows.append(
            PreviewRow(
                setting=text,
                previews_per_request=len(preview_ms[text]) // args.repeats,
                preview_ms_median=round(per_preview, 2),
                request_ms_median=round(with_previews, 1),
                plain_request_ms_median=round(plain, 1),
                request_ratio=round(with_previews / plain, 3),
                preview_to_full_decode=round(per_preview / full_ms, 3),
            )
        )
    device = engine.model.device
    meta = {
        "model": config.name,
        "family": config.family,
        "device": device,
        "device_detail": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "size": args.size,
        "steps": args.steps,
        "partials": args.partials,
        "repeats": args.repeats,
        "full_decode_ms_median": round(full_ms, 2),
        "commit": current_commit(),
        "date": date.today().isoformat(),
        "torch_threads": torch.get_num_threads(),
    }
    return meta, rows


def markdown(meta: dict, rows: list[PreviewRow]) -> str:
    lines = [
        f"# Preview cost: {meta['model']} ({meta['family']}) on {meta['device_detail']}",
        "",
        f"{meta['size']}, {meta['steps']} steps, {meta['partials']} previews per image, "
        f"medians of {meta['repeats']} interleaved repeats; commit {meta['commit']}. "
        f"Full-size VAE decode: {meta['full_decode_ms_median']} ms.",
        "",
        "| decoder | previews/request | ms per preview (decode + encode) | preview / full decode "
        "| request ms (with / without) | request ratio |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.setting} | {row.previews_per_request} | {row.preview_ms_median} "
            f"| {row.preview_to_full_decode} | {row.request_ms_median} / "
            f"{row.plain_request_ms_median} | {row.request_ratio} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--model", default="sd-tiny")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--partials", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--decoders", nargs="+", default=["vae:0.5", "vae:1.0", "tiny:0.5"])
    parser.add_argument("--tiny-cache", default="data/tiny-models")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    meta, rows = measure(args)
    report = markdown(meta, rows)
    stem = f"{meta['date']}-{slug(meta['device'])}-previews-{slug(meta['model'])}"
    save_table(args.out, stem, meta, rows, report)
    print(report)


if __name__ == "__main__":
    main()
