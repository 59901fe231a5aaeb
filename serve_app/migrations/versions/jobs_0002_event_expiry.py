"""Previews stay a while after their job ends (a stream a poll behind still gets them) and
the runner drops them by age: an index on (kind, created_at) keeps that a range scan.

Revision ID: jobs_0002
Branch: jobs
"""

from alembic import op

from serve_app.migrations import missing_index

revision = "jobs_0002"
down_revision = "jobs_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if missing_index("job_events", "job_events_expiry"):
        op.create_index("job_events_expiry", "job_events", ["kind", "created_at"])


def downgrade() -> None:
    op.drop_index("job_events_expiry", table_name="job_events")
