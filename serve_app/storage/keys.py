"""Object keys: the only names the storage backends accept.

Two shapes, nothing else (no "..", no absolute paths, no other characters):
  `<sha256>.<ext>`                 content addressed: the same bytes get the same key
  `jobs/<job id>/<index>.<ext>`    a job's result: a re-run overwrites the same object
"""

from __future__ import annotations

import hashlib
import re

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EXT = "(png|jpeg|webp)"
# Indexes without leading zeros, so one image has exactly one key.
KEY_PATTERN = re.compile(
    rf"[0-9a-f]{{64}}\.{_EXT}|jobs/[A-Za-z0-9_-]{{1,64}}/(0|[1-9][0-9]{{0,5}})\.{_EXT}"
)


class InvalidKeyError(ValueError):
    """A key outside the two accepted shapes: a bug in the caller, never user input."""


def is_valid_key(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None


def check_key(key: str, fmt: str | None = None) -> str:
    """The key itself, or InvalidKeyError; with `fmt`, the extension must match it too."""
    if not is_valid_key(key):
        raise InvalidKeyError(f"not a storage key: {key[:120]!r}")
    if fmt is not None and extension(key) != fmt:
        raise InvalidKeyError(f"key {key!r} does not end in .{fmt}")
    return key


def check_format(fmt: str) -> str:
    if fmt not in CONTENT_TYPES:
        raise InvalidKeyError(f"unsupported image format {fmt!r}")
    return fmt


def extension(key: str) -> str:
    return key.rsplit(".", 1)[1]


def content_type(key: str) -> str:
    return CONTENT_TYPES[extension(check_key(key))]


def content_key(data: bytes, fmt: str) -> tuple[str, str]:
    """(`<sha256>.<fmt>`, the hex digest)."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest}.{check_format(fmt)}", digest


def job_result_key(job_id: str, index: int, fmt: str) -> str:
    """Where image `index` of job `job_id` is stored: stable, so writing it is idempotent."""
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise InvalidKeyError(f"job id {job_id[:80]!r} is not a valid key part")
    return check_key(f"jobs/{job_id}/{index}.{check_format(fmt)}")
