"""The one place that picks the storage backend from the config."""

from __future__ import annotations

from serve_app import environment
from serve_app.config import AppConfig
from serve_app.storage.base import Storage
from serve_app.storage.local import LocalStorage


def build_storage(config: AppConfig) -> Storage:
    settings = config.storage
    if settings.kind == "s3":
        assert settings.s3 is not None  # the config model guarantees it
        # Imported here: boto3 loads only where S3 is configured.
        from serve_app.storage.s3 import S3Storage

        return S3Storage(settings.s3, url_ttl_s=settings.url_ttl_s)
    return LocalStorage(
        config.resolve_path(settings.root),
        url_ttl_s=settings.url_ttl_s,
        signing_secret=environment.signing_secret(),
        public_base_url=settings.public_base_url,
    )
