"""Partial images and cancellation in the engine and the replica, in-process (no Ray):
previews at the right steps without changing the final image, and calls that stop at
the next step once everyone in them has gone. Tiny models: the pictures are noise; what
is asserted is counts, sizes, steps and byte equality."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from serve_app.config import ModelConfig
from serve_app.errors import RequestCancelledError
from serve_app.jobs.progress import ProgressReporter
from serve_app.jobs.records import NewJob
from serve_app.jobs.store import JobStore
from serve_app.models.engine import BatchResult, ImageTask, ModelEngine
from serve_app.models.image_replica import ImageReplica
from serve_app.models.previews import preview_steps
from serve_app.models.spec import (
    EditSpec,
    GenerationResult,
    GenerationSpec,
    PartialImage,
    StreamAccepted,
)
from serve_app.observability.metrics import (
    IMAGE_REQUESTS_CANCELLED,
    PREVIEWS,
    STEPS_SAVED,
    InMemorySink,
    ServiceMetrics,
)
from tests.unit.test_engine import tiny_sd


def spec(seeds=(1,), steps=4, partial_images=0, **more) -> GenerationSpec:
    return GenerationSpec(
        "a cup", None, 64, 64, steps, 5.0, tuple(seeds), partial_images=partial_images, **more
    )


@pytest.fixture(scope="module")
def sink() -> InMemorySink:
    return InMemorySink()


@pytest.fixture(scope="module")
def engine(tiny_cache, sink):
    config = tiny_sd(limits={"max_n": 4, "min_side": 64, "max_side": 256, "max_steps": 200})
    return ModelEngine(config, tiny_cache, ServiceMetrics(sink))


def within_a_level(batched: np.ndarray, alone: np.ndarray) -> bool:
    """A batched image is its solo image within one level of 255: matrix kernels block a
    batch of two differently from one (README, Batching)."""
    return int(np.abs(batched.astype(int) - alone.astype(int)).max()) <= 1


def picture(partial: PartialImage) -> Image.Image:
    image = Image.open(io.BytesIO(partial.data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("steps", "partials", "expected"),
    [
        (4, 2, (2, 3)),
        (4, 3, (1, 2, 3)),
        (10, 3, (3, 5, 8)),
        (2, 3, (1,)),  # fewer steps than previews + 1: fewer previews
        (1, 3, ()),  # one step is the final image itself
        (20, 0, ()),
    ],
)
def test_previews_spread_over_the_steps_before_the_last(steps, partials, expected):
    assert preview_steps(steps, partials) == expected


def test_previews_come_at_their_steps_and_leave_the_final_image_unchanged(engine):
    seen: list[PartialImage] = []
    streamed = engine.run_batch([ImageTask(spec((3, 4), partial_images=2), seen.append)])[0]
    plain = engine.run_batch([spec((3, 4))])[0]
    assert isinstance(streamed, BatchResult) and isinstance(plain, BatchResult)
    for ours, theirs in zip(streamed.pixels, plain.pixels, strict=True):
        assert np.array_equal(ours, theirs)
    # Two previews of each of the two images, after steps 2 and 3 of 4, at half size.
    assert sorted((p.index, p.partial_image_index, p.step) for p in seen) == [
        (0, 0, 2),
        (0, 1, 3),
        (1, 0, 2),
        (1, 1, 3),
    ]
    for partial in seen:
        assert picture(partial).size == (32, 32) == (partial.width, partial.height)
        assert picture(partial).format == "PNG" and partial.steps == 4


def test_previews_use_the_requests_format_and_count_in_the_metrics(engine, sink):
    before = len(sink.values(PREVIEWS, model="sd-unit"))
    seen: list[PartialImage] = []
    request = spec(partial_images=1, output_format="jpeg", output_compression=60)
    engine.run_batch([ImageTask(request, seen.append)])
    assert [picture(p).format for p in seen] == ["JPEG"]
    assert seen[0].output_format == "jpeg"
    assert len(sink.values(PREVIEWS, model="sd-unit")) == before + 1


def test_a_batch_gives_each_request_its_own_previews(engine):
    first: list[PartialImage] = []
    second: list[PartialImage] = []
    together = engine.run_batch(
        [
            ImageTask(spec((5,), partial_images=1), first.append),
            ImageTask(spec((6, 7), partial_images=3), second.append),
            ImageTask(spec((8,))),  # asks for none
        ]
    )
    assert {r.batch_images for r in together} == {4}  # one pipeline call
    assert [(p.index, p.step) for p in first] == [(0, 2)]
    assert sorted((p.index, p.step) for p in second) == [(i, s) for i in (0, 1) for s in (1, 2, 3)]
    alone = engine.run_batch([spec((6, 7))])[0]
    for batched, solo in zip(together[1].pixels, alone.pixels, strict=True):
        assert within_a_level(batched, solo)


def test_a_preview_of_an_edit_family_with_packed_latents(tiny_cache):
    config = ModelConfig.model_validate(
        {
            "name": "qwen-edit-unit",
            "family": "qwen-image-edit",
            "path": "tiny:qwen-image-edit",
            "dtype": "float32",
            "device": "cpu",
            "defaults": {"size": "64x64", "steps": 3, "guidance_scale": 1.0},
            "limits": {"max_n": 2, "min_side": 32, "max_side": 128, "max_pixels": 16384},
            # The full-size decode: previews as large as the image.
            "previews": {"scale": 1.0},
        }
    )
    engine = ModelEngine(config, tiny_cache)
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    edit = EditSpec("make it red", None, (image,), None, 3, 1.0, None, (2,), partial_images=2)
    seen: list[PartialImage] = []
    streamed = engine.run_batch([ImageTask(edit, seen.append)])[0]
    plain = engine.run_batch([replace(edit, partial_images=0)])[0]
    assert np.array_equal(streamed.pixels[0], plain.pixels[0])
    assert [(p.step, p.width, p.height) for p in seen] == [(1, 96, 64), (2, 96, 64)]


def test_a_tiny_preview_decoder_stands_in_for_the_vae(tiny_cache):
    config = ModelConfig.model_validate(
        {
            "name": "z-unit",
            "family": "z-image",
            "path": "tiny:z-image",
            "dtype": "float32",
            "device": "cpu",
            "defaults": {"size": "64x64", "steps": 3, "guidance_scale": 0.0},
            "limits": {"max_n": 2, "min_side": 32, "max_side": 128, "max_pixels": 16384},
            "previews": {"decoder": "tiny"},
        }
    )
    engine = ModelEngine(config, tiny_cache)
    assert type(engine.previews.decoder.decoder).__name__ == "AutoencoderTiny"
    seen: list[PartialImage] = []
    request = GenerationSpec("a cup", None, 64, 64, 3, 0.0, (1,), partial_images=1)
    streamed = engine.run_batch([ImageTask(request, seen.append)])[0]
    plain = engine.run_batch([replace(request, partial_images=0)])[0]
    assert np.array_equal(streamed.pixels[0], plain.pixels[0])
    assert [(p.step, p.width, p.height) for p in seen] == [(2, 32, 32)]


def test_a_call_whose_requests_all_left_stops_at_the_next_step(engine, sink):
    saved_before = sum(sink.values(STEPS_SAVED, model="sd-unit"))
    stopped_at: list[int] = []
    task = ImageTask(spec(steps=50, partial_images=3))

    def on_partial(partial: PartialImage) -> None:
        stopped_at.append(partial.step)
        task.cancelled.set()  # the caller leaves on seeing its first preview

    task.on_partial = on_partial
    result = engine.run_batch([task])[0]
    assert isinstance(result, RequestCancelledError)
    # The first preview is after step 13 of 50; the call stopped before all 50 ran.
    saved = sum(sink.values(STEPS_SAVED, model="sd-unit")) - saved_before
    assert stopped_at[0] == 13 and 0 < saved <= 50 - 13


def test_a_request_leaving_a_shared_call_only_drops_its_own_images(engine):
    leaving = ImageTask(spec((1,), steps=6, partial_images=1))
    leaving.on_partial = lambda _partial: leaving.cancelled.set()
    staying = ImageTask(spec((2,), steps=6))
    results = engine.run_batch([leaving, staying])
    assert all(isinstance(r, BatchResult) for r in results)  # the call went on
    alone = engine.run_batch([spec((2,), steps=6)])[0]
    assert within_a_level(results[1].pixels[0], alone.pixels[0])


def test_a_request_cancelled_before_its_call_is_not_run(engine):
    gone = ImageTask(spec())
    gone.cancelled.set()
    results = engine.run_batch([gone, ImageTask(spec((9,)))])
    assert isinstance(results[0], RequestCancelledError)
    assert isinstance(results[1], BatchResult) and results[1].batch_images == 1


def test_a_canceled_job_stops_at_the_step_after_the_cancel(tiny_cache, store_url):
    """The real store: the job is canceled while step 3 runs; the call stops after step 4
    at the latest, whatever the write throttle."""
    store = JobStore(store_url)
    store.create_schema()
    store.create_jobs([NewJob("job_stop", "t", "image_generation", {})], max_attempts=1)
    store.claim_jobs("w", limit=1, lease_s=60)
    reporter = ProgressReporter(store_url, interval_s=3600)
    steps_seen: list[int] = []

    def progress(job_ids, step, total):
        steps_seen.append(step)
        gone = reporter(job_ids, step, total)
        if step == 3:
            store.cancel_job("t", "job_stop")  # after this step's check
        return gone

    metrics = InMemorySink()
    engine = ModelEngine(tiny_sd(), tiny_cache, ServiceMetrics(metrics), progress=progress)
    result = engine.run_batch([spec(steps=40, job_id="job_stop")])[0]
    assert isinstance(result, RequestCancelledError)
    assert steps_seen == [1, 2, 3, 4]
    assert metrics.values(STEPS_SAVED, model="sd-unit") == [36]
    assert store.get_job("job_stop").status == "canceled"
    store.dispose()


def test_job_previews_and_progress_land_in_the_event_stream(tiny_cache, store_url):
    store = JobStore(store_url)
    store.create_schema()
    store.create_jobs([NewJob("job_events", "t", "image_generation", {})], max_attempts=1)
    store.claim_jobs("w", limit=1, lease_s=60)
    reporter = ProgressReporter(store_url, interval_s=0)
    engine = ModelEngine(tiny_sd(), tiny_cache, progress=reporter)
    replica = ImageReplica(engine, job_previews=reporter.preview)
    result = asyncio.run(replica.run(spec(steps=4, partial_images=2, job_id="job_events")))
    assert len(result.images) == 1
    events = store.job_events("job_events")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.data["status"] for e in events if e.kind == "status"] == ["queued", "running"]
    assert [e.data["step"] for e in events if e.kind == "progress"] == [1, 2, 3, 4]
    previews = [e.data for e in events if e.kind == "preview"]
    assert [(p["partial_image_index"], p["step"]) for p in previews] == [(0, 2), (1, 3)]
    assert previews[0]["output_format"] == "png" and previews[0]["width"] == 32
    store.dispose()


async def collect(stream) -> list:
    return [item async for item in stream]


def test_a_replica_stream_accepts_then_previews_then_the_result(engine):
    replica = ImageReplica(engine)
    items = asyncio.run(collect(replica.stream(spec((11,), partial_images=3))))
    assert isinstance(items[0], StreamAccepted)
    assert [type(i).__name__ for i in items[1:]] == ["PartialImage"] * 3 + ["GenerationResult"]
    plain = asyncio.run(replica.run(spec((11,))))
    assert items[-1].images[0].data == plain.images[0].data


def test_closing_a_replica_stream_abandons_its_call(engine, sink):
    async def leave_early() -> GenerationResult:
        replica = ImageReplica(engine)
        stream = replica.stream(spec((12,), steps=200, partial_images=3))
        assert isinstance(await anext(stream), StreamAccepted)
        assert isinstance(await anext(stream), PartialImage)
        await stream.aclose()  # the client went away mid-call
        # The next request runs as soon as the abandoned call has stopped.
        return await asyncio.wait_for(replica.run(spec((13,), steps=2)), 60)

    saved_before = sum(sink.values(STEPS_SAVED, model="sd-unit"))
    cancelled_before = len(sink.values(IMAGE_REQUESTS_CANCELLED, model="sd-unit", stage="running"))
    result = asyncio.run(leave_early())
    assert len(result.images) == 1
    assert sum(sink.values(STEPS_SAVED, model="sd-unit")) - saved_before > 0
    running = sink.values(IMAGE_REQUESTS_CANCELLED, model="sd-unit", stage="running")
    assert len(running) == cancelled_before + 1


def test_a_cancelled_run_abandons_its_request(engine, sink):
    async def cancel_midway() -> None:
        replica = ImageReplica(engine)
        task = asyncio.ensure_future(replica.run(spec((14,), steps=300)))
        while not replica.queue.calls:  # its call has begun
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The model is free again long before 300 steps would have ended.
        await asyncio.wait_for(replica.run(spec((15,), steps=2)), 60)

    saved_before = sum(sink.values(STEPS_SAVED, model="sd-unit"))
    asyncio.run(cancel_midway())
    assert sum(sink.values(STEPS_SAVED, model="sd-unit")) - saved_before > 0
