"""Every environment variable the service reads, in one place.

They carry what must stay out of config files (Ray Serve logs an application's args):
passwords inside URLs and secrets. Each is read where a replica starts, so a cluster sets
them per node or pod. Every one may instead name a file with `<VARIABLE>_FILE` (a mounted
Kubernetes or Docker secret); the file's content, without surrounding whitespace, is the
value.
"""

from __future__ import annotations

import os
from pathlib import Path

# A job store URL with its password; overrides `jobs.store_url`.
JOB_STORE_URL_ENV = "IMAGE_SERVICE_JOB_STORE_URL"
# The API keys' database URL with its password; overrides `auth.database_url`.
KEY_DATABASE_URL_ENV = "IMAGE_SERVICE_KEY_DATABASE_URL"
# The rate limiter's Redis URL with its password; overrides `rate_limits.redis_url`.
REDIS_URL_ENV = "IMAGE_SERVICE_REDIS_URL"
# Space-separated `whsec_...` secrets (more than one while rotating). With none, webhooks
# are off: requests that ask for a callback are refused.
WEBHOOK_SECRETS_ENV = "IMAGE_SERVICE_WEBHOOK_SECRETS"
# Signs local /files URLs (16+ bytes); unset: a random key kept in <storage.root>.
SIGNING_SECRET_ENV = "IMAGE_SERVICE_SIGNING_SECRET"
# The API keys' HMAC pepper; `auth.pepper_env` may name another variable.
KEY_PEPPER_ENV = "IMAGE_SERVICE_KEY_PEPPER"
# S3 credentials are boto3's own: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a shared
# credentials file, or the instance's or pod's role.
S3_CREDENTIALS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

MIN_SIGNING_SECRET_BYTES = 16


def read(variable: str) -> str:
    """`$variable`, else the content of the file `$<variable>_FILE` names, else ""."""
    value = os.environ.get(variable, "")
    if value:
        return value
    path = os.environ.get(f"{variable}_FILE", "")
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise RuntimeError(
            f"${variable}_FILE names {path!r}, which cannot be read: {reason}"
        ) from None


def job_store_url(configured: str) -> str:
    return read(JOB_STORE_URL_ENV) or configured


def key_database_url(configured: str) -> str:
    return read(KEY_DATABASE_URL_ENV) or configured


def redis_url(configured: str | None) -> str | None:
    return read(REDIS_URL_ENV) or configured


def webhook_secrets() -> list[str]:
    secrets = read(WEBHOOK_SECRETS_ENV).split()
    for secret in secrets:
        if not secret.startswith("whsec_") or len(secret) < 30:
            raise RuntimeError(
                f"${WEBHOOK_SECRETS_ENV} holds a value that is not a webhook secret: each "
                "looks like whsec_<base64 of 24+ bytes>, space-separated"
            )
    return secrets


def signing_secret() -> bytes | None:
    value = read(SIGNING_SECRET_ENV).encode()
    if value and len(value) < MIN_SIGNING_SECRET_BYTES:
        raise RuntimeError(
            f"${SIGNING_SECRET_ENV} is shorter than {MIN_SIGNING_SECRET_BYTES} bytes; "
            "set a long random value, the same on every Gateway"
        )
    return value or None


def key_pepper(variable: str = KEY_PEPPER_ENV) -> bytes:
    """The pepper's bytes; empty when the variable is unset (the caller says what to do)."""
    return read(variable).encode()
