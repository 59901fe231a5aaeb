"""SQL engines for the service's own tables (jobs, API keys): SQLite on one machine,
PostgreSQL on a cluster, opened and created the same way for both stores."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

# Any constant: PostgreSQL's advisory lock that serialises migrations across replicas.
SCHEMA_LOCK_ID = 0x1A6E5E4E
# Execution option marking a transaction that will write (see `write_transaction`).
WRITES = "image_service_writes"
CONNECT_TIMEOUT_S = 5
# Tries at switching a SQLite file to WAL while another process holds it (0.1 s apart).
WAL_ATTEMPTS = 100


def is_outage(error: BaseException) -> bool:
    """The database itself failed (down, restarting, out of reach, SQLite's file locked
    past its timeout), not a statement: worth a retry, never the caller's fault."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def outage_summary(error: DBAPIError) -> str:
    """The driver's error in a line: without SQLAlchemy's statement and parameters."""
    cause = error.orig if error.orig is not None else error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def ping(engine: Engine) -> None:
    """Raises unless the database answers a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def open_engine(url: str) -> Engine:
    """`hide_parameters`: an error logged with its statement never shows the values, which
    hold prompts, results and key digests."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # A database that does not answer fails a connection in seconds, not minutes.
        return create_engine(
            parsed,
            hide_parameters=True,
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=8,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # Several processes (Gateways, JobRunners, model replicas, the CLI) share the file.
    engine = create_engine(
        parsed,
        hide_parameters=True,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        # Let SQLAlchemy's begin event issue BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        # WAL: readers run beside the one writer. Switching a new file to it needs the
        # file to itself, and SQLite answers "locked" at once (no busy wait) while
        # another process opening it at the same moment holds it: try again briefly.
        for attempt in range(WAL_ATTEMPTS):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == WAL_ATTEMPTS - 1:
                    raise
                time.sleep(0.1)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        # A writer takes the lock up front, so it waits (busy_timeout) instead of
        # failing when a read transaction would have to be upgraded.
        writes = connection.get_execution_options().get(WRITES, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it holds the write lock from its start."""
    with engine.connect() as connection:
        connection.execution_options(**{WRITES: True})
        with connection.begin():
            yield connection


MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(engine: Engine, branch: str, revision: str | None = None) -> None:
    """Bring a store's tables to the newest revision of its branch (`jobs` or `keys`) in
    serve_app/migrations, recorded in the table `alembic_version_<branch>`. Every replica
    calls this at start; one at a time gets in (PostgreSQL's advisory lock, SQLite's
    write lock), and the others find nothing left to do. The whole upgrade is one
    transaction: it lands entirely or not at all. `revision` stops at an older one (tests
    of the upgrade from it)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": SCHEMA_LOCK_ID})
        config.attributes["connection"] = connection
        config.attributes["version_table"] = f"alembic_version_{branch}"
        command.upgrade(config, revision or f"{branch}@head")
