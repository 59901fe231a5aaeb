"""The job store's tables, in SQLAlchemy Core: the same schema on SQLite and PostgreSQL.

Times are epoch seconds (floats) from the writer's clock: nodes must keep NTP time,
as leases compare them across machines.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    # The sync API's request body as JSON, with its seed fixed at submission so that a
    # re-run after a lost worker makes the same images under the same keys.
    Column("request", Text, nullable=False),
    Column("client_metadata", Text),
    Column("callback_url", Text),
    Column("batch_id", String(40)),
    # queued -> running -> succeeded | failed | canceled; only forward (running may go
    # back to queued when its worker is lost, counting an attempt).
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("worker_id", String(64)),
    Column("lease_token", String(64)),
    Column("lease_expires_at", Float),
    Column("heartbeat_at", Float),
    # Not claimed before this time (a retry's back-off).
    Column("run_after", Float, nullable=False),
    Column("progress_step", Integer),
    Column("progress_total", Integer),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("result", Text),
    Column("error", Text),
)
Index("jobs_queue", jobs.c.status, jobs.c.created_at, jobs.c.id)
Index("jobs_tenant", jobs.c.tenant, jobs.c.created_at, jobs.c.id)
Index("jobs_batch", jobs.c.batch_id)

batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False),
    # in_progress -> completed (every job terminal)
    Column("status", String(16), nullable=False),
    Column("callback_url", Text),
    Column("client_metadata", Text),
    Column("total", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    # creating -> done; a creator that dies leaves `creating` until locked_until passes.
    Column("state", String(16), nullable=False),
    Column("resource_id", String(40)),
    Column("locked_until", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant", "key"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    # The Standard Webhooks `webhook-id`: one per event, the same on every retry.
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("subject_id", String(40), nullable=False),
    Column("event", String(32), nullable=False),
    Column("url", Text, nullable=False),
    # The exact bytes sent each time.
    Column("payload", Text, nullable=False),
    # pending -> delivered | failed | disabled
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_token", String(64)),
    Column("lease_expires_at", Float),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
)
Index("webhooks_due", webhook_deliveries.c.status, webhook_deliveries.c.next_attempt_at)
Index("webhooks_subject", webhook_deliveries.c.subject_id)

# What happened to a job, in order: its status changes, step progress and previews, for
# GET /v1/jobs/{id}/events. `seq` counts from 1 per job; every writer first updates the
# job's row in the same transaction, so writers of one job take turns and `seq` has no
# gaps or reorderings a reader could see.
job_events = Table(
    "job_events",
    metadata,
    Column("job_id", String(40), nullable=False),
    Column("seq", Integer, nullable=False),
    # status | progress | preview
    Column("kind", String(16), nullable=False),
    Column("data", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("job_id", "seq"),
)
# Previews are large: the job runner drops them a while after they were made.
Index("job_events_expiry", job_events.c.kind, job_events.c.created_at)
