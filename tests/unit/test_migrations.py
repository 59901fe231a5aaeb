"""The job and key stores' schemas under Alembic, on SQLite and PostgreSQL: migrations make
exactly the tables the code uses, adopt a database made by the releases before them
without losing a row, and run once however many replicas start together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from serve_app.db import migrate, open_engine
from serve_app.jobs.schema import metadata as job_tables
from serve_app.jobs.store import JobStore
from serve_app.security.key_store import KeyStore
from serve_app.security.key_store import metadata as key_tables
from serve_app.security.keys import KeyHasher
from tests.unit.test_job_store import make_jobs

HASHER = KeyHasher(b"migration-test-pepper-0123456789")


def schema_differences(engine: sa.Engine, tables: sa.MetaData) -> list:
    """What Alembic's autogenerate would change to make the database match `tables`
    (other tables in the database, the other store's, are not its business)."""

    def ours(name, kind, _parent) -> bool:
        return kind != "table" or name in tables.tables

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": ours})
        return compare_metadata(context, tables)


def versions(engine: sa.Engine) -> dict[str, list[str]]:
    with engine.connect() as connection:
        return {
            branch: connection.execute(sa.text(f"SELECT version_num FROM alembic_version_{branch}"))
            .scalars()
            .all()
            for branch in ("jobs", "keys")
        }


def test_migrations_make_exactly_the_tables_the_code_uses(store_url):
    jobs = JobStore(store_url)
    jobs.create_schema()
    keys = KeyStore.open(store_url, HASHER)
    try:
        assert schema_differences(jobs.engine, job_tables) == []
        assert schema_differences(keys.engine, key_tables) == []
        # Both stores in one database, each on its own branch and version table.
        assert versions(jobs.engine) == {"jobs": ["jobs_0002"], "keys": ["keys_0001"]}
    finally:
        jobs.dispose()
        keys.close()


def test_a_database_made_before_migrations_is_adopted_with_its_rows(store_url):
    """The last release made its tables with `create_all`; this one starts on them."""
    engine = open_engine(store_url)
    job_tables.create_all(engine)
    key_tables.create_all(engine)
    engine.dispose()
    old = JobStore(store_url)  # no create_schema: the tables are the old release's
    created = make_jobs(3)
    old.create_jobs(created, max_attempts=2)
    old.dispose()
    old_keys = KeyStore(open_engine(store_url), HASHER)  # over the old tables, as they are
    issued = old_keys.create_key("acme", "crm", ["generate"])
    old_keys.close()

    jobs = JobStore(store_url)
    jobs.create_schema()
    keys = KeyStore.open(store_url, HASHER)
    try:
        assert versions(jobs.engine) == {"jobs": ["jobs_0002"], "keys": ["keys_0001"]}
        assert schema_differences(jobs.engine, job_tables) == []
        assert schema_differences(keys.engine, key_tables) == []
        for job in created:
            kept = jobs.get_job(job.id)
            assert (kept.status, kept.request, kept.max_attempts) == ("queued", job.request, 2)
        assert keys.verify(issued.key).tenant == "acme"
    finally:
        jobs.dispose()
        keys.close()


def test_a_database_at_the_first_revision_upgrades_with_its_rows(store_url):
    engine = open_engine(store_url)
    migrate(engine, "jobs", revision="jobs_0001")
    engine.dispose()
    old = JobStore(store_url)  # no create_schema: the tables are jobs_0001's
    created = make_jobs(2)
    old.create_jobs(created, max_attempts=2)
    old.dispose()

    jobs = JobStore(store_url)
    jobs.create_schema()
    try:
        with jobs.engine.connect() as connection:
            version = connection.execute(sa.text("SELECT version_num FROM alembic_version_jobs"))
            assert version.scalars().all() == ["jobs_0002"]
        assert schema_differences(jobs.engine, job_tables) == []
        assert [jobs.get_job(job.id).status for job in created] == ["queued", "queued"]
        assert [event.kind for event in jobs.job_events(created[0].id)] == ["status"]
    finally:
        jobs.dispose()


@pytest.mark.parametrize("replicas", [6])
def test_replicas_starting_together_migrate_once(store_url, replicas):
    def start(_) -> None:
        store = JobStore(store_url)
        try:
            store.create_schema()
        finally:
            store.dispose()

    with ThreadPoolExecutor(replicas) as pool:
        list(pool.map(start, range(replicas)))
    engine = open_engine(store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT version_num FROM alembic_version_jobs"))
            assert rows.scalars().all() == ["jobs_0002"]
        assert schema_differences(engine, job_tables) == []
    finally:
        engine.dispose()
