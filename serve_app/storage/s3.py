"""Images in any S3-compatible store, through boto3; clients download them with presigned
GET URLs, so image bytes never pass through the Gateway twice.

A PUT is atomic on S3: readers see the old object or the new one, never a mix. Every
boto3/botocore failure becomes a `StorageError` (503) whose message names neither the
endpoint nor the bucket nor any credential; the log line keeps only the error's class and
code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from serve_app.config import S3Config
from serve_app.errors import StorageError
from serve_app.storage.base import StoredImage
from serve_app.storage.keys import CONTENT_TYPES, check_format, check_key, content_key

logger = logging.getLogger(__name__)
# What HEAD answers for a missing object (HEAD replies carry no error body, so no code).
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def make_client(config: S3Config) -> Any:
    """A boto3 S3 client with bounded timeouts and few retries. Thread-safe once made."""
    # Credentials from boto3's own chain (environment, shared files, the node's role).
    session = boto3.session.Session(region_name=config.region)
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        config=BotoConfig(
            signature_version="s3v4",
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            retries={"mode": "standard", "total_max_attempts": config.max_attempts},
            s3={"addressing_style": config.addressing_style},
        ),
    )


class S3Storage:
    def __init__(self, config: S3Config, *, url_ttl_s: int, client: Any = None):
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.url_ttl_s = url_ttl_s
        self.client = client if client is not None else make_client(config)

    def put(self, data: bytes, fmt: str, key: str | None = None) -> StoredImage:
        if key is None:
            key, digest = content_key(data, fmt)
        else:
            check_key(key, check_format(fmt))
            digest = content_key(data, fmt)[1]
        with _storage_errors("put"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ContentType=CONTENT_TYPES[fmt],
            )
        return StoredImage(key=key, sha256=digest, content_type=CONTENT_TYPES[fmt])

    def url(self, key: str, base_url: str) -> str:
        # Presigning is local: it signs with the credentials and sends nothing.
        with _storage_errors("presign"):
            return self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.prefix + check_key(key)},
                ExpiresIn=self.url_ttl_s,
            )

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + check_key(key))
        except ClientError as error:
            if _error_code(error) in _MISSING:
                return False
            raise _storage_error("head", error) from None
        except BotoCoreError as error:
            raise _storage_error("head", error) from None
        return True

    def delete(self, key: str) -> None:
        with _storage_errors("delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + check_key(key))


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise _storage_error(action, error) from None


def _storage_error(action: str, error: BotoCoreError | ClientError) -> StorageError:
    detail = _error_code(error) if isinstance(error, ClientError) else type(error).__name__
    logger.warning("S3 %s failed: %s", action, detail or "ClientError")
    return StorageError(f"image storage is unavailable ({action} failed); retry shortly")


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
