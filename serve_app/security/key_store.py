"""Tenants and API keys in SQL (SQLAlchemy Core): SQLite on one machine, PostgreSQL on a
cluster. Rows hold the key's HMAC digest, never the key."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from serve_app.db import migrate, open_engine, ping
from serve_app.security.keys import ApiKeyRecord, KeyHasher, new_key, prefix_of
from serve_app.security.scopes import SCOPES, Scope

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("prefix", sa.String(16), primary_key=True),
    sa.Column("key_digest", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(64), sa.ForeignKey("tenants.name"), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    # Space-separated scope names.
    sa.Column("scopes", sa.String(200), nullable=False),
    # A JSON list of model names; NULL means every model.
    sa.Column("models", sa.JSON, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rotated_from", sa.String(16), nullable=True),
)

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class KeyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class IssuedKey:
    """A new key: `key` is shown to its owner once and kept nowhere."""

    key: str
    record: ApiKeyRecord


def utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _record(row: RowMapping) -> ApiKeyRecord:
    models = row["models"]
    return ApiKeyRecord(
        prefix=row["prefix"],
        tenant=row["tenant"],
        name=row["name"],
        scopes=frozenset(row["scopes"].split()),
        models=frozenset(models) if models is not None else None,
        created_at=_aware(row["created_at"]),
        expires_at=_aware(row["expires_at"]),
        revoked_at=_aware(row["revoked_at"]),
        last_used_at=_aware(row["last_used_at"]),
        rotated_from=row["rotated_from"],
    )


class KeyStore:
    def __init__(self, engine: Engine, hasher: KeyHasher):
        """Over tables that exist; `open` makes or migrates them first."""
        self.engine = engine
        self.hasher = hasher

    @classmethod
    def open(cls, url: str, hasher: KeyHasher) -> KeyStore:
        engine = open_engine(url)
        migrate(engine, "keys")
        return cls(engine, hasher)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        ping(self.engine)

    # --- issuing ---------------------------------------------------------------------

    def create_key(
        self,
        tenant: str,
        name: str,
        scopes: Iterable[Scope],
        models: Iterable[str] | None = None,
        expires_at: datetime | None = None,
        rotated_from: str | None = None,
    ) -> IssuedKey:
        scope_set = frozenset(scopes)
        unknown = scope_set - set(SCOPES)
        if unknown or not scope_set:
            raise ValueError(
                f"scopes must be a non-empty subset of {SCOPES}, got {sorted(unknown)}"
            )
        if not TENANT_PATTERN.fullmatch(tenant):
            raise ValueError(f"tenant names match {TENANT_PATTERN.pattern}")
        now = utc_now()
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(tenants.c.name).where(tenants.c.name == tenant))
            if exists.first() is None:
                conn.execute(tenants.insert().values(name=tenant, created_at=now))
            for _ in range(5):  # a prefix collision is rare; draw again
                prefix, key = new_key()
                try:
                    with conn.begin_nested():
                        conn.execute(
                            api_keys.insert().values(
                                prefix=prefix,
                                key_digest=self.hasher.digest(key),
                                tenant=tenant,
                                name=name,
                                scopes=" ".join(s for s in SCOPES if s in scope_set),
                                models=sorted(models) if models is not None else None,
                                created_at=now,
                                expires_at=expires_at,
                                rotated_from=rotated_from,
                            )
                        )
                    break
                except IntegrityError:
                    continue
            else:
                raise RuntimeError("could not draw a free key prefix")
            row = conn.execute(api_keys.select().where(api_keys.c.prefix == prefix)).mappings()
            return IssuedKey(key, _record(row.one()))

    def rotate(self, prefix: str, old_expires_at: datetime | None = None) -> IssuedKey:
        """A new key like the old one; both work until the old is revoked or expires."""
        old = self.get(prefix)
        if old_expires_at is not None:
            with self.engine.begin() as conn:
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.prefix == prefix)
                    .values(expires_at=old_expires_at)
                )
        return self.create_key(
            old.tenant,
            old.name,
            old.scopes,
            old.models,
            expires_at=old.expires_at,
            rotated_from=prefix,
        )

    def revoke(self, prefix: str, at: datetime | None = None) -> ApiKeyRecord:
        self.get(prefix)
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at or utc_now())
            )
        return self.get(prefix)

    # --- reading ---------------------------------------------------------------------

    def get(self, prefix: str) -> ApiKeyRecord:
        with self.engine.connect() as conn:
            row = conn.execute(api_keys.select().where(api_keys.c.prefix == prefix)).mappings()
            found = row.first()
        if found is None:
            raise KeyNotFound(f"no key with prefix {prefix!r}")
        return _record(found)

    def list_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        query = api_keys.select().order_by(api_keys.c.tenant, api_keys.c.created_at)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def verify(self, key: str, now: datetime | None = None) -> ApiKeyRecord | None:
        """The live record this key belongs to, or None (unknown, wrong, revoked, expired)."""
        prefix = prefix_of(key)
        if prefix is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(api_keys.select().where(api_keys.c.prefix == prefix)).mappings()
            found = row.first()
        if found is None or not self.hasher.matches(key, found["key_digest"]):
            return None
        record = _record(found)
        return record if record.live_at(now or utc_now()) else None

    def touch(self, prefix: str, at: datetime | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.prefix == prefix)
                .values(last_used_at=at or utc_now())
            )


def expiry_in(days: float | None) -> datetime | None:
    return utc_now() + timedelta(days=days) if days is not None else None
