"""Images in a local folder: the embedded default.

Keys are content addressed (`<sha256>.<ext>`), so writing the same image twice is
harmless and a crash mid-write never leaves a half file under a served key.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KEY_PATTERN = re.compile(r"^[0-9a-f]{64}\.(png|jpeg|webp)$")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class StoredImage:
    key: str
    sha256: str
    content_type: str


class LocalStorage:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, fmt: str) -> StoredImage:
        digest = hashlib.sha256(data).hexdigest()
        key = f"{digest}.{fmt}"
        target = self.root / key
        if not target.exists():
            _atomic_write(target, data)
        return StoredImage(key=key, sha256=digest, content_type=CONTENT_TYPES[fmt])

    def path_for(self, key: str) -> Path | None:
        """The file behind a key, or None for a malformed or unknown key."""
        if not KEY_PATTERN.fullmatch(key):
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
