"""What every storage backend offers. Calls block (file system or network I/O): async
callers run them in a worker thread (`asyncio.to_thread`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredImage:
    key: str
    sha256: str
    content_type: str


class Storage(Protocol):
    def put(self, data: bytes, fmt: str, key: str | None = None) -> StoredImage:
        """Store atomically. No key: content addressed (`<sha256>.<fmt>`); a given key (e.g.
        `jobs/<id>/<i>.<fmt>`) is used as is and overwritten, so a re-run is idempotent."""
        ...

    def url(self, key: str, base_url: str) -> str:
        """An expiring URL a client can GET the image from. `base_url` is the request's own
        base, used by backends that serve files through the Gateway."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...
