"""Expiring HMAC signatures for /files URLs."""

from __future__ import annotations

import hashlib
import hmac
import time


class UrlSigner:
    def __init__(self, secret: bytes, ttl_s: int):
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s

    def _signature(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, key: str, now: float | None = None) -> tuple[int, str]:
        expires = int(now if now is not None else time.time()) + self.ttl_s
        return expires, self._signature(key, expires)

    def verify(self, key: str, expires: int, signature: str, now: float | None = None) -> bool:
        if expires < (now if now is not None else time.time()):
            return False
        # compare_digest raises on non-ASCII str; compare bytes instead.
        given = signature.encode("utf-8", "replace")
        return hmac.compare_digest(self._signature(key, expires).encode(), given)
