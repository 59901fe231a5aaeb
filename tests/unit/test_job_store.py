"""The job store against real SQLite and a real PostgreSQL: transitions, leases, sweeper,
Idempotency-Keys, batches and the webhook outbox."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve_app.errors import ConflictError, NotFoundError, UnprocessableError
from serve_app.jobs.records import NewJob
from serve_app.jobs.store import JobStore, new_id


class Clock:
    """Real time until a test sets `now` (epoch seconds)."""

    def __init__(self) -> None:
        self.now: float | None = None

    def __call__(self) -> float:
        return time.time() if self.now is None else self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url, clock):
    job_store = JobStore(store_url, clock=clock)
    job_store.create_schema()
    yield job_store
    job_store.dispose()


def make_jobs(count: int, tenant: str = "acme", callback_url: str | None = None) -> list[NewJob]:
    return [
        NewJob(
            id=new_id("job"),
            tenant=tenant,
            type="image_generation",
            request={"prompt": f"item {i}", "seed": i},
            client_metadata={"sku": str(i)},
            callback_url=callback_url,
        )
        for i in range(count)
    ]


def deliveries(store: JobStore) -> list:
    return store.claim_deliveries(limit=100, lease_s=30)


def test_create_read_list_and_tenant_scope(store):
    created = make_jobs(5)
    store.create_jobs(created, max_attempts=3)
    store.create_jobs(make_jobs(2, tenant="other"), max_attempts=3)

    job = store.get_job(created[0].id, "acme")
    assert job.status == "queued" and job.request == {"prompt": "item 0", "seed": 0}
    assert job.client_metadata == {"sku": "0"} and job.attempts == 0
    assert store.get_job(created[0].id, "other") is None

    first_page, more = store.list_jobs("acme", limit=3)
    assert more and [j.id for j in first_page] == [j.id for j in reversed(created)][:3]
    second_page, more = store.list_jobs("acme", limit=3, after=first_page[-1].id)
    assert not more and [j.id for j in second_page] == [created[1].id, created[0].id]
    with pytest.raises(NotFoundError):
        store.list_jobs("other", limit=3, after=created[0].id)

    assert [store.queue_position(store.get_job(j.id)) for j in created] == [0, 1, 2, 3, 4]


def test_idempotency_key_states(store, clock):
    clock.now = 1000
    assert store.reserve_key("acme", "k1", "hash-a", lock_s=30) is None
    clock.now = 1001
    with pytest.raises(ConflictError):
        store.reserve_key("acme", "k1", "hash-a", lock_s=30)
    with pytest.raises(UnprocessableError):
        store.reserve_key("acme", "k1", "hash-b", lock_s=30)
    # The same key belongs to each tenant separately.
    assert store.reserve_key("other", "k1", "hash-b", lock_s=30) is None

    jobs = make_jobs(1)
    store.create_jobs(jobs, max_attempts=3, idempotency_key="k1")
    clock.now = 1002
    assert store.reserve_key("acme", "k1", "hash-a", lock_s=30) == jobs[0].id
    with pytest.raises(UnprocessableError):
        store.reserve_key("acme", "k1", "hash-b", lock_s=30)

    # A creator that died: after the lock, the key can be taken over.
    clock.now = 1000
    assert store.reserve_key("acme", "k2", "hash-a", lock_s=30) is None
    clock.now = 1031
    assert store.reserve_key("acme", "k2", "hash-a", lock_s=30) is None
    # A refused request gives its key back.
    store.release_key("acme", "k2")
    clock.now = 1032
    assert store.reserve_key("acme", "k2", "hash-b", lock_s=30) is None


def test_fifty_concurrent_reservations_let_exactly_one_create(store_url, store):
    barrier = threading.Barrier(50)

    def reserve(_):
        own = JobStore(store_url)  # like separate Gateway replicas
        try:
            barrier.wait()
            return store_outcome(own)
        finally:
            own.dispose()

    def store_outcome(own):
        try:
            return own.reserve_key("acme", "same", "hash", lock_s=30)
        except ConflictError:
            return "409"

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(reserve, range(50)))
    assert outcomes.count(None) == 1
    assert outcomes.count("409") == 49


def test_concurrent_claims_never_share_a_job(store_url, store):
    created = make_jobs(40)
    store.create_jobs(created, max_attempts=3)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name):
        own = JobStore(store_url)
        try:
            while True:
                batch = own.claim_jobs(name, limit=3, lease_s=30)
                if not batch:
                    return
                with lock:
                    claimed.extend(job.id for job in batch)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(job.id for job in created)
    assert all(store.get_job(job.id).attempts == 1 for job in created)


def test_claim_order_heartbeat_finish_and_outbox(store, clock):
    created = make_jobs(3, callback_url="https://hooks.example.com/x")
    clock.now = 100
    store.create_jobs(created, max_attempts=3)
    clock.now = 101
    (job,) = store.claim_jobs("w1", limit=1, lease_s=10)
    assert job.id == created[0].id and job.status == "running" and job.started_at == 101
    clock.now = 105
    assert store.heartbeat(job.id, job.lease_token, lease_s=10)
    assert not store.heartbeat(job.id, "not-the-token", lease_s=10)

    store.set_progress([job.id], 2, 4)
    assert (store.get_job(job.id).progress_step, store.get_job(job.id).progress_total) == (2, 4)

    result = {
        "images": [
            {"key": f"jobs/{job.id}/0.png", "seed": 0, "sha256": "ab", "width": 64, "height": 64}
        ],
        "steps": 4,
    }
    clock.now = 110
    finished = store.finish_job(job.id, job.lease_token, result=result)
    assert finished.status == "succeeded" and finished.result == result
    # Only forward: a second finish, or a failure after success, writes nothing.
    assert store.finish_job(job.id, job.lease_token, result=result) is None
    assert store.finish_job(job.id, job.lease_token, error={"code": "x"}) is None
    assert store.get_job(job.id).status == "succeeded"

    (delivery,) = deliveries(store)
    assert delivery.subject_id == job.id and delivery.event == "job.succeeded"
    payload = json.loads(delivery.payload)
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job.id
    assert payload["data"]["result"]["images"][0]["sha256"] == "ab"
    assert "url" not in payload["data"]["result"]["images"][0]


def test_cancel_queued_and_running(store):
    created = make_jobs(2, callback_url="https://hooks.example.com/x")
    store.create_jobs(created, max_attempts=3)
    assert store.cancel_job("acme", created[1].id).status == "canceled"
    (running,) = store.claim_jobs("w1", limit=5, lease_s=10)  # the canceled one is not claimed
    assert running.id == created[0].id
    assert store.cancel_job("acme", running.id).status == "canceled"
    assert not store.heartbeat(running.id, running.lease_token, lease_s=10)
    assert store.finish_job(running.id, running.lease_token, result={"images": []}) is None
    assert store.cancel_job("acme", running.id).status == "canceled"  # repeat is harmless
    with pytest.raises(NotFoundError):
        store.cancel_job("other", running.id)
    assert sorted(d.event for d in deliveries(store)) == ["job.canceled", "job.canceled"]

    done = make_jobs(1)
    store.create_jobs(done, max_attempts=3)
    (job,) = store.claim_jobs("w1", limit=1, lease_s=10)
    store.finish_job(job.id, job.lease_token, result={"images": []})
    with pytest.raises(ConflictError):
        store.cancel_job("acme", job.id)


def test_sweeper_requeues_then_fails_after_max_attempts(store, clock):
    created = make_jobs(1, callback_url="https://hooks.example.com/x")
    clock.now = 0
    store.create_jobs(created, max_attempts=2)
    job_id = created[0].id
    clock.now = 1
    (first,) = store.claim_jobs("w1", limit=1, lease_s=10)
    clock.now = 5
    assert store.sweep_expired() == (0, 0)  # lease still good
    clock.now = 12
    assert store.sweep_expired() == (1, 0)
    assert store.get_job(job_id).status == "queued"
    # The lost worker's late result is refused.
    assert store.finish_job(job_id, first.lease_token, result={"images": []}) is None

    clock.now = 13
    (second,) = store.claim_jobs("w2", limit=1, lease_s=10)
    assert second.attempts == 2
    clock.now = 30
    assert store.sweep_expired() == (0, 1)
    failed = store.get_job(job_id)
    assert failed.status == "failed" and failed.error["code"] == "worker_lost"
    assert [d.event for d in deliveries(store)] == ["job.failed"]


def test_retry_waits_for_its_delay_and_counts_attempts(store, clock):
    created = make_jobs(1)
    clock.now = 0
    store.create_jobs(created, max_attempts=2)
    clock.now = 1
    (job,) = store.claim_jobs("w1", limit=1, lease_s=10)
    error = {"code": "model_overloaded", "message": "busy"}
    clock.now = 2
    assert store.retry_job(job.id, job.lease_token, delay_s=5, error=error).status == "queued"
    clock.now = 3
    assert store.claim_jobs("w1", limit=1, lease_s=10) == []
    clock.now = 8
    (again,) = store.claim_jobs("w1", limit=1, lease_s=10)
    clock.now = 9
    final = store.retry_job(again.id, again.lease_token, delay_s=5, error=error)
    assert final.status == "failed" and final.error == error


def test_batch_completes_once_when_its_last_jobs_end_together(store_url, store):
    created = make_jobs(6)
    batch_id = new_id("batch")
    store.create_jobs(
        created,
        max_attempts=3,
        batch_id=batch_id,
        batch_callback_url="https://hooks.example.com/batch",
        batch_metadata={"import": "spring"},
    )
    claimed = store.claim_jobs("w1", limit=6, lease_s=30)
    barrier = threading.Barrier(len(claimed))

    def finish(job):
        own = JobStore(store_url)
        try:
            barrier.wait()
            return own.finish_job(job.id, job.lease_token, result={"images": []})
        finally:
            own.dispose()

    with ThreadPoolExecutor(len(claimed)) as pool:
        assert all(pool.map(finish, claimed))
    batch = store.get_batch(batch_id, "acme")
    assert batch.status == "completed" and batch.counts == {"succeeded": 6}
    assert batch.client_metadata == {"import": "spring"}
    assert store.get_batch(batch_id, "other") is None
    (delivery,) = deliveries(store)
    assert delivery.event == "batch.completed"
    # The webhook names the batch's jobs, in submission order, as GET does.
    payload = json.loads(delivery.payload)
    assert payload["data"]["job_ids"] == store.batch_job_ids(batch_id)
    assert sorted(payload["data"]["job_ids"]) == sorted(job.id for job in claimed)


def test_delivery_lease_and_outcomes(store, clock):
    created = make_jobs(1, callback_url="https://hooks.example.com/x")
    store.create_jobs(created, max_attempts=3)
    (job,) = store.claim_jobs("w1", limit=1, lease_s=10)
    clock.now = 100
    store.finish_job(job.id, job.lease_token, result={"images": []})

    (delivery,) = store.claim_deliveries(limit=5, lease_s=30)
    clock.now = 101
    assert store.claim_deliveries(limit=5, lease_s=30) == []  # leased
    store.record_delivery(
        delivery.id,
        delivery.lease_token,
        status="pending",
        status_code=500,
        error="HTTP 500",
        next_attempt_at=110,
    )
    clock.now = 105
    assert store.claim_deliveries(limit=5, lease_s=30) == []  # backing off
    clock.now = 111
    (again,) = store.claim_deliveries(limit=5, lease_s=30)
    assert again.id == delivery.id and again.payload == delivery.payload
    clock.now = 112
    store.record_delivery(
        again.id,
        again.lease_token,
        status="delivered",
        status_code=204,
        error=None,
        next_attempt_at=None,
    )
    latest = store.latest_delivery(job.id)
    assert (latest.status, latest.attempts, latest.last_status_code) == ("delivered", 2, 204)
    clock.now = 200
    assert store.claim_deliveries(limit=5, lease_s=30) == []


def test_a_full_model_queue_is_waited_out_without_using_attempts(store, clock):
    created = make_jobs(1)
    clock.now = 0
    store.create_jobs(created, max_attempts=1)
    busy = {"code": "model_overloaded", "message": "the model is at capacity"}
    for now in (1, 10, 20):
        clock.now = now
        (job,) = store.claim_jobs("w1", limit=1, lease_s=10)
        again = store.retry_job(job.id, job.lease_token, delay_s=1, error=busy, count_attempt=False)
        assert again.status == "queued" and again.attempts == 0


def test_idempotency_keys_expire_after_their_ttl(store, clock):
    clock.now = 0
    assert store.reserve_key("acme", "old", "h", lock_s=30) is None
    store.create_jobs(make_jobs(1), max_attempts=1, idempotency_key="old")
    clock.now = 1000
    assert store.expire_keys(older_than_s=86400) == 0
    clock.now = 90000
    assert store.expire_keys(older_than_s=86400) == 1
    clock.now = 90001
    assert store.reserve_key("acme", "old", "other", lock_s=30) is None


def events(store: JobStore, job_id: str, after: int = 0) -> list[tuple[int, str, dict]]:
    return [(e.seq, e.kind, e.data) for e in store.job_events(job_id, after)]


def test_every_transition_is_an_event_in_order(store, clock):
    (job, other) = make_jobs(2)
    clock.now = 100
    store.create_jobs([job, other], max_attempts=2)
    (claimed,) = store.claim_jobs("w1", limit=1, lease_s=10)
    assert store.set_progress([job.id, other.id], 1, 4) == {job.id}  # `other` is queued
    assert store.running_jobs([job.id, other.id]) == {job.id}
    assert store.add_preview(job.id, {"partial_image_index": 0, "b64_json": "AA=="})
    assert not store.add_preview(other.id, {"partial_image_index": 0, "b64_json": "AA=="})
    store.retry_job(job.id, claimed.lease_token, delay_s=5, error={"code": "x", "message": "y"})
    clock.now = 106
    (again,) = store.claim_jobs("w2", limit=1, lease_s=10)
    store.finish_job(job.id, again.lease_token, result={"images": [], "steps": 4})
    seen = events(store, job.id)
    assert [seq for seq, _, _ in seen] == [1, 2, 3, 4, 5, 6, 7]
    assert [(kind, data.get("status") or data.get("step")) for _, kind, data in seen] == [
        ("status", "queued"),
        ("status", "running"),
        ("progress", 1),
        ("preview", None),
        ("status", "queued"),
        ("status", "running"),
        ("status", "succeeded"),
    ]
    assert seen[4][2]["run_after"] == 105 and seen[4][2]["error"]["code"] == "x"
    assert seen[5][2]["attempts"] == 2
    # Resuming after an event id gives what followed it, and nothing twice.
    assert [seq for seq, _, _ in events(store, job.id, after=5)] == [6, 7]
    assert events(store, other.id) == [(1, "status", {"status": "queued", "attempts": 0})]


def test_previews_outlive_their_job_a_while_then_go(store, clock):
    """A stream a poll behind the job's end still gets its last previews; later they go,
    by age, running job or ended, and the other events stay."""
    (ended, running) = make_jobs(2)
    clock.now = 100
    store.create_jobs([ended, running], max_attempts=1)
    claimed = {job.id: job for job in store.claim_jobs("w1", limit=2, lease_s=1000)}
    assert store.add_preview(ended.id, {"partial_image_index": 0, "b64_json": "AA=="})
    assert store.add_preview(running.id, {"partial_image_index": 0, "b64_json": "AA=="})
    store.finish_job(ended.id, claimed[ended.id].lease_token, result={"images": [], "steps": 1})
    assert [kind for _, kind, _ in events(store, ended.id)] == [
        "status",
        "status",
        "preview",
        "status",
    ]
    clock.now = 159
    assert store.expire_previews(older_than_s=60) == 0
    clock.now = 160.5
    assert store.add_preview(running.id, {"partial_image_index": 1, "b64_json": "AA=="})
    assert store.expire_previews(older_than_s=60) == 2
    assert [seq for seq, _, _ in events(store, ended.id)] == [1, 2, 4]
    assert [(seq, kind) for seq, kind, _ in events(store, running.id)] == [
        (1, "status"),
        (2, "status"),
        (4, "preview"),
    ]
    # A job's last event stays, old preview or not, so its id is never given twice.
    clock.now = 300
    assert store.expire_previews(older_than_s=60) == 0
    assert store.set_progress([running.id], 2, 4) == {running.id}
    assert [seq for seq, _, _ in events(store, running.id)] == [1, 2, 4, 5]
    assert store.expire_previews(older_than_s=60) == 1


def test_cancel_sweep_and_release_are_events_too(store, clock):
    jobs = make_jobs(3)
    clock.now = 100
    store.create_jobs(jobs, max_attempts=3)
    store.claim_jobs("w1", limit=3, lease_s=10)
    store.cancel_job("acme", jobs[0].id)
    assert store.add_preview(jobs[0].id, {"b64_json": ""}) is False
    clock.now = 111
    store.sweep_expired()  # jobs 1 and 2 lost their worker: queued again
    store.claim_jobs("w2", limit=2, lease_s=10)
    store.release_jobs("w2")
    assert [d["status"] for _, _, d in events(store, jobs[0].id)] == [
        "queued",
        "running",
        "canceled",
    ]
    for job in jobs[1:]:
        assert [d["status"] for _, _, d in events(store, job.id)] == [
            "queued",
            "running",
            "queued",
            "running",
            "queued",
        ]


def test_concurrent_event_writers_never_share_a_seq(store_url, store):
    (job,) = make_jobs(1)
    store.create_jobs([job], max_attempts=1)
    store.claim_jobs("w", limit=1, lease_s=60)
    writers = [JobStore(store_url) for _ in range(4)]

    def write(index: int) -> None:
        for step in range(10):
            if index % 2:
                writers[index].set_progress([job.id], step, 10)
            else:
                writers[index].add_preview(job.id, {"step": step})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    for writer in writers:
        writer.dispose()
    seqs = [seq for seq, _, _ in events(store, job.id)]
    assert seqs == list(range(1, 43))  # queued, running, and 40 written at once
