"""The job store as the first releases made it: jobs, their events, batches, idempotency
keys and webhook deliveries.

Revision ID: jobs_0001
Branch: jobs
"""

import sqlalchemy as sa
from alembic import op

from serve_app.migrations import missing

revision = "jobs_0001"
down_revision = None
branch_labels = ("jobs",)
depends_on = None


def upgrade() -> None:
    if missing("batches"):
        op.create_table(
            "batches",
            sa.Column("id", sa.String(length=40), nullable=False),
            sa.Column("tenant", sa.String(length=64), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("callback_url", sa.Text(), nullable=True),
            sa.Column("client_metadata", sa.Text(), nullable=True),
            sa.Column("total", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
    if missing("idempotency_keys"):
        op.create_table(
            "idempotency_keys",
            sa.Column("tenant", sa.String(length=64), nullable=False),
            sa.Column("key", sa.String(length=255), nullable=False),
            sa.Column("request_hash", sa.String(length=64), nullable=False),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.Column("resource_id", sa.String(length=40), nullable=True),
            sa.Column("locked_until", sa.Float(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("tenant", "key"),
        )
    if missing("job_events"):
        op.create_table(
            "job_events",
            sa.Column("job_id", sa.String(length=40), nullable=False),
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("data", sa.Text(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("job_id", "seq"),
        )
    if missing("jobs"):
        op.create_table(
            "jobs",
            sa.Column("id", sa.String(length=40), nullable=False),
            sa.Column("tenant", sa.String(length=64), nullable=False),
            sa.Column("type", sa.String(length=32), nullable=False),
            sa.Column("request", sa.Text(), nullable=False),
            sa.Column("client_metadata", sa.Text(), nullable=True),
            sa.Column("callback_url", sa.Text(), nullable=True),
            sa.Column("batch_id", sa.String(length=40), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("max_attempts", sa.Integer(), nullable=False),
            sa.Column("worker_id", sa.String(length=64), nullable=True),
            sa.Column("lease_token", sa.String(length=64), nullable=True),
            sa.Column("lease_expires_at", sa.Float(), nullable=True),
            sa.Column("heartbeat_at", sa.Float(), nullable=True),
            sa.Column("run_after", sa.Float(), nullable=False),
            sa.Column("progress_step", sa.Integer(), nullable=True),
            sa.Column("progress_total", sa.Integer(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=True),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.Column("result", sa.Text(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("jobs_batch", "jobs", ["batch_id"])
        op.create_index("jobs_queue", "jobs", ["status", "created_at", "id"])
        op.create_index("jobs_tenant", "jobs", ["tenant", "created_at", "id"])
    if missing("webhook_deliveries"):
        op.create_table(
            "webhook_deliveries",
            sa.Column("id", sa.String(length=40), nullable=False),
            sa.Column("tenant", sa.String(length=64), nullable=False),
            sa.Column("subject_id", sa.String(length=40), nullable=False),
            sa.Column("event", sa.String(length=32), nullable=False),
            sa.Column("url", sa.Text(), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("next_attempt_at", sa.Float(), nullable=False),
            sa.Column("lease_token", sa.String(length=64), nullable=True),
            sa.Column("lease_expires_at", sa.Float(), nullable=True),
            sa.Column("last_status_code", sa.Integer(), nullable=True),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("delivered_at", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("webhooks_due", "webhook_deliveries", ["status", "next_attempt_at"])
        op.create_index("webhooks_subject", "webhook_deliveries", ["subject_id"])


def downgrade() -> None:
    for table in ("webhook_deliveries", "jobs", "job_events", "idempotency_keys", "batches"):
        op.drop_table(table)
