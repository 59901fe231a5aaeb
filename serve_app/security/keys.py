"""API keys: the format, the peppered hash, and who a checked key speaks for.

A key reads `sk-<prefix>-<secret>`. The prefix is public: it names the key in lists
and logs and finds its row. Only HMAC-SHA256(pepper, key) is stored; the pepper is a
server secret from the environment, so a copy of the database alone cannot be used to
test guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from serve_app import environment
from serve_app.security.scopes import Scope

KEY_PATTERN = re.compile(r"^sk-([a-z0-9]{12})-([A-Za-z0-9_-]{43})$")
MIN_PEPPER_BYTES = 16


def new_key() -> tuple[str, str]:
    """(prefix, full key): 12 base-36 characters of prefix, 256 bits of secret."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(12))
    return prefix, f"sk-{prefix}-{secrets.token_urlsafe(32)}"


def prefix_of(key: str) -> str | None:
    """The lookup prefix of a well-formed key; None for anything else."""
    match = KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


class KeyHasher:
    def __init__(self, pepper: bytes):
        if len(pepper) < MIN_PEPPER_BYTES:
            raise ValueError(f"the key pepper must be at least {MIN_PEPPER_BYTES} bytes")
        self._pepper = pepper

    def digest(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()

    def matches(self, key: str, stored_digest: str) -> bool:
        return hmac.compare_digest(self.digest(key).encode(), stored_digest.encode())


def pepper_from_environment(variable: str) -> bytes:
    value = environment.key_pepper(variable)
    if len(value) < MIN_PEPPER_BYTES:
        raise RuntimeError(
            f"API keys are on but ${variable} is unset or shorter than {MIN_PEPPER_BYTES} "
            "bytes; set it to the same long random secret for the Gateway and the admin CLI"
        )
    return value


@dataclass(frozen=True)
class ApiKeyRecord:
    """A stored key, without its secret."""

    prefix: str
    tenant: str
    name: str
    scopes: frozenset[Scope]
    # None: every model.
    models: frozenset[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: str | None = None

    def live_at(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Principal:
    """The caller behind a checked key: what `request.state.principal` holds."""

    tenant: str
    key_prefix: str
    scopes: frozenset[Scope]
    models: frozenset[str] | None

    @classmethod
    def of(cls, record: ApiKeyRecord) -> Principal:
        return cls(record.tenant, record.prefix, record.scopes, record.models)

    def has_scope(self, scope: Scope) -> bool:
        return scope in self.scopes

    def allows_model(self, name: str) -> bool:
        return self.models is None or name in self.models
