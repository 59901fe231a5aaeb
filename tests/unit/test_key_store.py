"""The key store on SQLite and on a real PostgreSQL server (a fresh database, dropped)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from serve_app.security.key_store import KeyNotFound, KeyStore, api_keys, utc_now
from serve_app.security.keys import KeyHasher
from tests.security_fixtures import fresh_postgres_database

HASHER = KeyHasher(b"unit-test-pepper-0123456789")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        key_store = KeyStore.open(f"sqlite:///{tmp_path}/keys.db", HASHER)
        yield key_store
        key_store.close()
        return
    with fresh_postgres_database() as url:
        key_store = KeyStore.open(url, HASHER)
        yield key_store
        key_store.close()


def test_a_created_key_verifies_and_only_its_digest_is_stored(store):
    issued = store.create_key("acme", "crm", ["generate", "edit"], ["sd-tiny"])
    record = store.verify(issued.key)
    assert record is not None
    assert (record.tenant, record.name) == ("acme", "crm")
    assert record.scopes == {"generate", "edit"} and record.models == {"sd-tiny"}
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(api_keys)).mappings().one()
    assert issued.key not in [str(value) for value in row.values()]
    assert row["key_digest"] == HASHER.digest(issued.key)


def test_wrong_keys_are_refused(store):
    issued = store.create_key("acme", "crm", ["generate"])
    secret_flipped = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    assert store.verify(secret_flipped) is None
    assert store.verify("sk-aaaaaaaaaaaa-" + "x" * 43) is None
    assert store.verify("not a key") is None
    # The same secret under another store's pepper does not verify.
    other = KeyStore(store.engine, KeyHasher(b"another-pepper-0123456789"))
    assert other.verify(issued.key) is None


def test_all_models_is_none_and_listing_has_no_secrets(store):
    first = store.create_key("acme", "crm", ["generate"])
    second = store.create_key(
        "globex", "oa", ["jobs", "admin"], expires_at=utc_now() + timedelta(days=1)
    )
    records = store.list_keys()
    assert [r.prefix for r in records] == [first.record.prefix, second.record.prefix]
    assert records[0].models is None
    assert [r.prefix for r in store.list_keys("globex")] == [second.record.prefix]
    assert not any(first.key in repr(r) or second.key in repr(r) for r in records)


def test_revoked_and_expired_keys_stop_working(store):
    revoked = store.create_key("acme", "crm", ["generate"])
    assert store.revoke(revoked.record.prefix).revoked_at is not None
    assert store.verify(revoked.key) is None
    expired = store.create_key(
        "acme", "old", ["generate"], expires_at=utc_now() - timedelta(seconds=1)
    )
    assert store.verify(expired.key) is None
    with pytest.raises(KeyNotFound):
        store.revoke("nosuchprefix")


def test_rotation_keeps_both_keys_live_until_the_old_is_revoked(store):
    old = store.create_key("acme", "crm", ["generate", "edit"], ["sd-tiny"])
    new = store.rotate(old.record.prefix)
    assert new.key != old.key and new.record.rotated_from == old.record.prefix
    assert (new.record.tenant, new.record.scopes, new.record.models) == (
        "acme",
        old.record.scopes,
        old.record.models,
    )
    assert store.verify(old.key) is not None and store.verify(new.key) is not None
    store.revoke(old.record.prefix)
    assert store.verify(old.key) is None and store.verify(new.key) is not None


def test_rotation_can_give_the_old_key_a_grace_period(store):
    old = store.create_key("acme", "crm", ["generate"])
    store.rotate(old.record.prefix, old_expires_at=utc_now() + timedelta(hours=1))
    assert store.verify(old.key) is not None
    assert store.verify(old.key, now=utc_now() + timedelta(hours=2)) is None


def test_touch_records_last_use(store):
    issued = store.create_key("acme", "crm", ["generate"])
    assert store.get(issued.record.prefix).last_used_at is None
    store.touch(issued.record.prefix)
    assert store.get(issued.record.prefix).last_used_at is not None


@pytest.mark.parametrize(
    ("tenant", "scopes"), [("Acme Corp", ["generate"]), ("acme", []), ("acme", ["root"])]
)
def test_bad_tenants_and_scopes_are_refused(store, tenant, scopes):
    with pytest.raises(ValueError):
        store.create_key(tenant, "crm", scopes)
