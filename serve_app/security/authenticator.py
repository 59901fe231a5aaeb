"""From a presented key to a Principal, with a short cache so that most requests cost no
database round trip. Revocation reaches a replica within `cache_ttl_s`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from serve_app.security.key_store import KeyStore, utc_now
from serve_app.security.keys import Principal

MAX_CACHED_KEYS = 10_000


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        cache_ttl_s: float = 5.0,
        last_used_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self.last_used_every_s = last_used_every_s
        self._clock = clock
        # digest -> (principal, trusted until (monotonic)); digests, so no raw key is kept.
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._touched: dict[str, float] = {}

    async def principal_for(self, key: str) -> Principal | None:
        """The key's principal, or None when it is unknown, wrong, revoked or expired."""
        digest = self.store.hasher.digest(key)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            principal = cached[0]
        else:
            record = await asyncio.to_thread(self.store.verify, key)
            if record is None:
                self._cache.pop(digest, None)
                return None
            principal = Principal.of(record)
            if self.cache_ttl_s > 0:
                if len(self._cache) >= MAX_CACHED_KEYS:
                    self._cache.clear()
                self._cache[digest] = (principal, now + self._trust_for(record.expires_at))
        await self._note_use(principal.key_prefix, now)
        return principal

    def _trust_for(self, expires_at: datetime | None) -> float:
        if expires_at is None:
            return self.cache_ttl_s
        # Never trust a key from the cache past its expiry.
        return max(0.0, min(self.cache_ttl_s, (expires_at - utc_now()).total_seconds()))

    async def _note_use(self, prefix: str, now: float) -> None:
        last = self._touched.get(prefix)
        if last is not None and now - last < self.last_used_every_s:
            return
        self._touched[prefix] = now
        await asyncio.to_thread(self.store.touch, prefix)
