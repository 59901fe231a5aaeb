"""Every environment variable the service reads, in one place.

They carry what must stay out of config files (Ray Serve logs an application's args):
passwords inside URLs and secrets. Each is read where a replica starts, so a cluster sets
them per node or pod.
"""

from __future__ import annotations

import os

# A job store URL with its password; overrides `jobs.store_url`.
JOB_STORE_URL_ENV = "IMAGE_SERVICE_JOB_STORE_URL"
# The API keys' database URL with its password; overrides `auth.database_url`.
KEY_DATABASE_URL_ENV = "IMAGE_SERVICE_KEY_DATABASE_URL"
# The rate limiter's Redis URL with its password; overrides `rate_limits.redis_url`.
REDIS_URL_ENV = "IMAGE_SERVICE_REDIS_URL"
# Space-separated `whsec_...` secrets; used when `jobs.webhooks.secrets` is empty.
WEBHOOK_SECRETS_ENV = "IMAGE_SERVICE_WEBHOOK_SECRETS"
# Signs local /files URLs; used when `storage.signing_secret` is unset.
SIGNING_SECRET_ENV = "IMAGE_SERVICE_SIGNING_SECRET"
# The API keys' HMAC pepper; `auth.pepper_env` may name another variable.
KEY_PEPPER_ENV = "IMAGE_SERVICE_KEY_PEPPER"


def job_store_url(configured: str) -> str:
    return os.environ.get(JOB_STORE_URL_ENV) or configured


def key_database_url(configured: str) -> str:
    return os.environ.get(KEY_DATABASE_URL_ENV) or configured


def redis_url(configured: str | None) -> str | None:
    return os.environ.get(REDIS_URL_ENV) or configured


def webhook_secrets(configured: list[str]) -> list[str]:
    return list(configured) or os.environ.get(WEBHOOK_SECRETS_ENV, "").split()


def signing_secret() -> bytes | None:
    value = os.environ.get(SIGNING_SECRET_ENV, "")
    return value.encode() if value else None


def key_pepper(variable: str = KEY_PEPPER_ENV) -> bytes:
    """The pepper's bytes; empty when the variable is unset (the caller says what to do)."""
    return os.environ.get(variable, "").encode()
