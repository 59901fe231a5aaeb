"""Images in a local folder: the embedded default, served by the Gateway's /files route.

Writes go to a temp file that is renamed into place, so a crash mid-write never leaves a
half file under a served key. URLs are `/files/<key>?expires=..&sig=..`, signed with a
secret from the config, the environment, or a key file kept beside the images.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from functools import cached_property
from pathlib import Path

from serve_app.errors import StorageError
from serve_app.storage.base import StoredImage
from serve_app.storage.keys import CONTENT_TYPES, check_format, check_key, content_key, is_valid_key
from serve_app.storage.signing import UrlSigner

logger = logging.getLogger(__name__)


class LocalStorage:
    def __init__(
        self,
        root: Path,
        *,
        url_ttl_s: int = 3600,
        signing_secret: bytes | None = None,
        public_base_url: str | None = None,
    ):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.url_ttl_s = url_ttl_s
        self.public_base_url = public_base_url
        self._given_secret = signing_secret

    @cached_property
    def signer(self) -> UrlSigner:
        # Built on first use: a store that never hands out URLs writes no key file.
        return UrlSigner(self._given_secret or self.signing_secret(), self.url_ttl_s)

    def put(self, data: bytes, fmt: str, key: str | None = None) -> StoredImage:
        if key is None:
            key, digest = content_key(data, fmt)
            overwrite = False  # the same key always holds the same bytes
        else:
            check_key(key, check_format(fmt))
            digest = content_key(data, fmt)[1]
            overwrite = True
        target = self.root / key
        try:
            if overwrite or not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(target, data)
        except OSError as error:
            logger.warning("local image write failed: %s", type(error).__name__)
            raise StorageError("could not store the image; retry shortly") from None
        return StoredImage(key=key, sha256=digest, content_type=CONTENT_TYPES[fmt])

    def url(self, key: str, base_url: str) -> str:
        check_key(key)
        base = (self.public_base_url or base_url).rstrip("/")
        expires, signature = self.signer.sign(key)
        return f"{base}/files/{key}?expires={expires}&sig={signature}"

    def exists(self, key: str) -> bool:
        return (self.root / check_key(key)).is_file()

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            (self.root / key).unlink(missing_ok=True)
        except OSError as error:
            logger.warning("local image delete failed: %s", type(error).__name__)
            raise StorageError("could not delete the image; retry shortly") from None

    def path_for(self, key: str) -> Path | None:
        """The file behind a key, or None for a malformed or unknown key."""
        if not is_valid_key(key):
            return None
        path = self.root / key
        return path if path.is_file() else None

    def signing_secret(self) -> bytes:
        """A random secret kept beside the images, created once by whichever replica is first."""
        path = self.root / ".signing_key"
        if not path.exists():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
        for _ in range(50):  # another replica may be mid-write
            value = path.read_text().strip()
            if len(value) == 64:
                return value.encode()
            time.sleep(0.02)
        raise RuntimeError(f"unreadable signing key at {path}")


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
