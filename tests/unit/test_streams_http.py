"""The streaming HTTP faces in-process (no Ray; the tiny SD model in this process):
image streams as OpenAI frames them, refusals before the first event, an error event
after it, and a job's event stream with Last-Event-ID."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest

from serve_app.config import AppConfig
from serve_app.errors import ErrorCode, ServiceUnavailableError
from serve_app.jobs.records import NewJob
from serve_app.jobs.store import JobStore
from serve_app.models.engine import ModelEngine
from serve_app.models.image_replica import ImageReplica
from serve_app.models.spec import StreamAccepted
from serve_app.prompts import PromptCatalog
from serve_app.service.backends import CatalogPrompts
from serve_app.service.images import open_image_service
from serve_app.service.jobs import JobService
from tests.helpers import assert_error, in_process_app, scratch_args

ANONYMOUS = {"enabled": False, "allow_anonymous_on_loopback": True}


def parse_sse(text: str) -> list[dict]:
    """Events as {id?, event?, data} (comments and `retry:` lines set aside)."""
    events = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "data" in fields:
            events.append(fields)
    return events


class FailsMidStream:
    """A real replica whose stream breaks after its first preview (a lost replica)."""

    def __init__(self, replica: ImageReplica):
        self.replica = replica

    async def run(self, spec):
        return await self.replica.run(spec)

    async def stream(self, spec):
        async for item in self.replica.stream(spec):
            yield item
            if not isinstance(item, StreamAccepted):
                raise ServiceUnavailableError(
                    "a replica was lost; retry", code=ErrorCode.REPLICA_UNAVAILABLE
                )

    async def health(self):
        return await self.replica.health()


@pytest.fixture(scope="module")
def config_and_engine(tmp_path_factory, tiny_cache):
    root = tmp_path_factory.mktemp("streams")
    args = scratch_args(root, tiny_cache, auth=ANONYMOUS, rate_limits={"enabled": False})
    # Streams of jobs that do not end close after a second (a client would reconnect).
    args["jobs"].update(events_poll_s=0.05, event_stream_s=1)
    config = AppConfig.model_validate(args)
    sd = next(model for model in config.models if model.name == "sd-tiny")
    return config, ModelEngine(sd, tiny_cache)


@pytest.fixture
def setup(config_and_engine):
    """A replica per test: its queue lives on the test's event loop."""
    config, engine = config_and_engine
    replica = ImageReplica(engine)
    models = {"sd-tiny": replica, "z-image-tiny": FailsMidStream(replica)}
    return config, in_process_app(config, models)


def client(setup) -> httpx.AsyncClient:
    _config, app = setup
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=120)


BODY = {"model": "sd-tiny", "prompt": "a cup", "size": "64x64", "seed": 21}


async def test_a_streamed_generation_is_framed_as_openai_frames_it(setup):
    async with client(setup) as http:
        streamed = await http.post(
            "/v1/images/generations", json={**BODY, "stream": True, "partial_images": 2}
        )
        plain = await http.post("/v1/images/generations", json=BODY)
    assert streamed.status_code == 200 and plain.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(streamed.text)
    assert events[-1] == {"data": "[DONE]"}
    payloads = [json.loads(event["data"]) for event in events[:-1]]
    assert [event["event"] for event in events[:-1]] == [p["type"] for p in payloads]
    assert [p["type"] for p in payloads] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"
    ]
    partial, completed = payloads[0], payloads[-1]
    assert [p["partial_image_index"] for p in payloads[:2]] == [0, 1]
    assert (partial["size"], partial["width"], partial["height"]) == ("64x64", 32, 32)
    for key in ("b64_json", "created_at", "quality", "background", "output_format", "index"):
        assert key in partial and key in completed
    assert completed["usage"]["total_tokens"] == 0 and completed["usage"]["steps"] == 4
    assert completed["seed"] == 21 and completed["revised_prompt"] == "a cup"
    assert completed["batch_images"] == 1
    assert completed["b64_json"] == plain.json()["data"][0]["b64_json"]


async def test_n_images_each_stream_their_events(setup):
    async with client(setup) as http:
        response = await http.post(
            "/v1/images/generations",
            json={**BODY, "n": 2, "stream": True, "partial_images": 1},
        )
    payloads = [json.loads(e["data"]) for e in parse_sse(response.text)[:-1]]
    partials = sorted(p["index"] for p in payloads if p["type"].endswith("partial_image"))
    completed = [(p["index"], p["seed"]) for p in payloads if p["type"].endswith("completed")]
    assert partials == [0, 1] and completed == [(0, 21), (1, 22)]


@pytest.mark.parametrize(
    ("extra", "code", "param"),
    [
        ({"steps": 99}, "invalid_steps", "steps"),
        ({"response_format": "url"}, "unsupported_parameter", "response_format"),
        ({"partial_images": 4}, "invalid_parameter", "partial_images"),
        ({"stream": "true"}, "invalid_parameter", "stream"),  # JSON has booleans
    ],
)
async def test_refusals_come_before_the_stream_as_plain_errors(setup, extra, code, param):
    async with client(setup) as http:
        response = await http.post("/v1/images/generations", json={**BODY, "stream": True, **extra})
    assert_error(response, 400, code, param)


async def test_a_failure_after_the_first_event_is_an_error_event(setup):
    async with client(setup) as http:
        response = await http.post(
            "/v1/images/generations",
            json={**BODY, "model": "z-image-tiny", "stream": True, "partial_images": 1},
        )
    assert response.status_code == 200
    events = parse_sse(response.text)
    assert [e.get("event") for e in events] == ["image_generation.partial_image", "error"]
    error = json.loads(events[-1]["data"])
    assert error["type"] == "error" and error["error"]["code"] == "replica_unavailable"
    assert set(error["error"]) == {"message", "type", "param", "code", "request_id"}


def job_store(setup) -> JobStore:
    config, _app = setup
    return JobStore(config.jobs.store_url)


async def test_job_events_come_in_order_and_resume_after_last_event_id(setup):
    store = job_store(setup)
    async with client(setup) as http:
        created = await http.post(
            "/v1/jobs",
            json={"type": "image_generation", "request": {**BODY, "partial_images": 1}},
        )
        job_id = created.json()["id"]
        # A queued job: the stream shows its place in the queue, then its time is up
        # (event_stream_s) and a client would reconnect.
        queued = parse_sse((await http.get(f"/v1/jobs/{job_id}/events")).text)
        assert [(e.get("id"), e["event"]) for e in queued] == [("1", "status"), (None, "queue")]
        position = (await http.get(f"/v1/jobs/{job_id}")).json()["queue_position"]
        assert json.loads(queued[1]["data"]) == {"job_id": job_id, "queue_position": position}

        # What a JobRunner and a replica write as the job runs.
        (job,) = store.claim_jobs("w", limit=1, lease_s=60)
        store.set_progress([job_id], 1, 2)
        store.add_preview(job_id, {"partial_image_index": 0, "b64_json": "AA=="})
        store.set_progress([job_id], 2, 2)
        running = await http.get(f"/v1/jobs/{job_id}/events", params={"previews": "true"})
        events = [e for e in parse_sse(running.text) if "id" in e]
        assert [(int(e["id"]), e["event"]) for e in events] == [
            (1, "status"),
            (2, "status"),
            (3, "progress"),
            (4, "preview"),
            (5, "progress"),
        ]
        assert json.loads(events[3]["data"])["b64_json"] == "AA=="
        without = await http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "1"})
        assert [int(e["id"]) for e in parse_sse(without.text) if "id" in e] == [2, 3, 5]

        # The end: the last event carries the job, a stream without previews skips them,
        # and the stream closes at once.
        store.finish_job(job_id, job.lease_token, result={"images": [], "steps": 2})
        ended = await http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "2"})
        assert ended.text.startswith("retry: 1000\nid: 3\n")
        after = [e for e in parse_sse(ended.text) if "id" in e]
        assert [int(e["id"]) for e in after] == [3, 5, 6]
        last = json.loads(after[-1]["data"])
        assert last["status"] == "succeeded" and last["job"]["status"] == "succeeded"
        quiet = await http.get(f"/v1/jobs/{job_id}/events", params={"after": 6})
        assert [e for e in parse_sse(quiet.text) if "id" in e] == []
    store.dispose()


class EndsBetweenReads(JobStore):
    """The real store, where the job ends just as the event stream has read the job and
    goes on to read its events: the interleaving a busy machine makes now and then."""

    def __init__(self, url: str, end):
        super().__init__(url)
        self.end = end

    def job_events(self, *args, **kwargs):
        if self.end is not None:
            self.end, end = None, self.end
            end()
        return super().job_events(*args, **kwargs)


async def test_a_job_that_ends_while_its_stream_reads_is_streamed_as_ended(setup):
    config, _app = setup
    store = job_store(setup)
    store.create_jobs([NewJob("job_racing", "anonymous", "image_generation", {})], max_attempts=1)
    (claimed,) = store.claim_jobs("w", limit=1, lease_s=60)
    result = {"images": [], "steps": 2}
    racing = EndsBetweenReads(
        config.jobs.store_url,
        lambda: store.finish_job(claimed.id, claimed.lease_token, result=result),
    )
    prompts = CatalogPrompts(PromptCatalog.from_yaml(Path(config.templates_path)))
    service = JobService(open_image_service(config, prompts, {}), racing, [])
    running = racing.get_job(claimed.id)
    events = [
        event
        async for event in service.job_events(
            running, after=0, previews=False, base_url="http://127.0.0.1/", stream_s=5
        )
        if event is not None
    ]
    ended = events[-1]
    assert (ended.kind, ended.data["status"]) == ("status", "succeeded")
    # The job object the last event carries is the ended job, not the one read before.
    assert ended.data["job"]["status"] == "succeeded", ended.data["job"]
    racing.dispose()
    store.dispose()


async def test_job_events_are_refused_by_name_and_scoped_to_the_tenant(setup):
    async with client(setup) as http:
        missing = await http.get("/v1/jobs/job_nope/events")
        created = await http.post("/v1/jobs", json={"type": "image_generation", "request": BODY})
        bad_id = await http.get(
            f"/v1/jobs/{created.json()['id']}/events", headers={"Last-Event-ID": "x1"}
        )
    assert_error(missing, 404, "job_not_found", "job_id")
    assert_error(bad_id, 400, "invalid_parameter", "Last-Event-ID")
    # Another tenant's job is as unknown as no job at all.
    store = job_store(setup)
    store.create_jobs(
        [NewJob("job_theirs", "another-tenant", "image_generation", {})], max_attempts=1
    )
    async with client(setup) as http:
        theirs = await http.get("/v1/jobs/job_theirs/events")
    assert_error(theirs, 404, "job_not_found", "job_id")
    store.dispose()


def test_a_job_request_is_never_streamed_but_keeps_its_previews(setup):
    store = job_store(setup)

    async def submit() -> str:
        async with client(setup) as http:
            response = await http.post(
                "/v1/jobs",
                json={
                    "type": "image_generation",
                    "request": {**BODY, "stream": True, "partial_images": 2},
                },
            )
            return response.json()["id"]

    job = store.get_job(asyncio.run(submit()))
    assert job.request["stream"] is False and job.request["partial_images"] == 2
    store.dispose()


def test_sse_frames_carry_base64_that_decodes(setup):
    async def partial() -> dict:
        async with client(setup) as http:
            response = await http.post(
                "/v1/images/generations",
                json={**BODY, "stream": True, "partial_images": 1, "output_format": "jpeg"},
            )
            return json.loads(parse_sse(response.text)[0]["data"])

    event = asyncio.run(partial())
    assert base64.b64decode(event["b64_json"])[:3] == b"\xff\xd8\xff"  # a JPEG
    assert event["output_format"] == "jpeg"


def test_parse_sse_reads_ids_events_and_data():
    text = "retry: 10\n\nid: 3\nevent: status\ndata: {}\n\n: keep-alive\n\ndata: [DONE]\n\n"
    assert parse_sse(text) == [{"id": "3", "event": "status", "data": "{}"}, {"data": "[DONE]"}]
