"""Real databases for tests: a SQLite file, or a fresh schema on the local PostgreSQL.

PostgreSQL is the one `.ci/services.sh` starts (127.0.0.1:5432, trust auth, database
`test`); each use gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

POSTGRES_DSN = os.environ.get(
    "TEST_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)


def _dsn_parts() -> dict[str, str]:
    return dict(part.split("=", 1) for part in POSTGRES_DSN.split())


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A SQLAlchemy URL whose connections live in a new, empty schema."""
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    parts = _dsn_parts()
    url = (
        f"postgresql+psycopg://{parts.get('user', 'postgres')}@{parts.get('host', '127.0.0.1')}:"
        f"{parts.get('port', '5432')}/{parts.get('dbname', 'test')}"
        f"?options=-csearch_path%3D{schema}"
    )
    try:
        yield url
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
