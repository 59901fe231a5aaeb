"""The key store as the first releases made it: tenants and their API keys.

Revision ID: keys_0001
Branch: keys
"""

import sqlalchemy as sa
from alembic import op

from serve_app.migrations import missing

revision = "keys_0001"
down_revision = None
branch_labels = ("keys",)
depends_on = None


def upgrade() -> None:
    if missing("tenants"):
        op.create_table(
            "tenants",
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
    if missing("api_keys"):
        op.create_table(
            "api_keys",
            sa.Column("prefix", sa.String(length=16), nullable=False),
            sa.Column("key_digest", sa.String(length=64), nullable=False),
            sa.Column("tenant", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("scopes", sa.String(length=200), nullable=False),
            sa.Column("models", sa.JSON(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("rotated_from", sa.String(length=16), nullable=True),
            sa.ForeignKeyConstraint(["tenant"], ["tenants.name"]),
            sa.PrimaryKeyConstraint("prefix"),
        )
        op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("tenants")
