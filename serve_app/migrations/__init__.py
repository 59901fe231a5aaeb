"""The job and key stores' schemas as Alembic revisions: a `jobs` branch and a `keys`
branch, each with its own version table, since the two stores may share a database or
not. `serve_app.db.migrate` runs them when a replica or the key CLI opens a store.

A new revision: a file in versions/ whose `down_revision` is its branch's last one, with
the operations that move the old schema to the new (`op.add_column`, ...), and the same
change in the store's SQLAlchemy tables; `tests/unit/test_migrations.py` checks that a
migrated database and the tables agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def missing(table: str) -> bool:
    """For the first revisions: a database made before migrations (by `create_all`)
    already has their tables, which they adopt, making only what is missing."""
    return not sa.inspect(op.get_bind()).has_table(table)


def missing_index(table: str, name: str) -> bool:
    """Likewise for an index a later revision adds: a database made by `create_all` from
    newer tables has it already."""
    return name not in {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table)}
