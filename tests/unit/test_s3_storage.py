"""S3Storage against a real S3-compatible server (moto in server mode) on 127.0.0.1."""

from __future__ import annotations

import time

import httpx
import pytest

from serve_app.config import AppConfig, S3Config
from serve_app.errors import StorageError
from serve_app.storage import build_storage, job_result_key
from serve_app.storage.s3 import S3Storage
from tests.conftest import s3_client
from tests.helpers import free_port
from tests.s3_server import S3Server

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend pixels" * 10


def s3_config(endpoint_url: str, bucket: str, **overrides) -> S3Config:
    fields = {
        "bucket": bucket,
        "endpoint_url": endpoint_url,
        "region": "us-east-1",
        "addressing_style": "path",
        **overrides,
    }
    return S3Config.model_validate(fields)


@pytest.fixture
def storage(s3_server, s3_bucket) -> S3Storage:
    return S3Storage(s3_config(s3_server.endpoint_url, s3_bucket), url_ttl_s=60)


def test_presigned_url_downloads_the_exact_bytes(storage):
    stored = storage.put(PNG, "png")
    url = storage.url(stored.key, "http://ignored.example")
    assert url.startswith(f"{storage.client.meta.endpoint_url}/")
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"


def test_object_carries_content_type_and_prefix(s3_server, s3_bucket):
    storage = S3Storage(
        s3_config(s3_server.endpoint_url, s3_bucket, prefix="images/prod/"), url_ttl_s=60
    )
    stored = storage.put(b"webp bytes", "webp", key=job_result_key("job_1", 0, "webp"))
    head = s3_client(s3_server).head_object(Bucket=s3_bucket, Key="images/prod/jobs/job_1/0.webp")
    assert head["ContentType"] == "image/webp"
    assert stored.key == "jobs/job_1/0.webp"
    assert storage.exists(stored.key)


def test_presigned_url_stops_working_after_ttl(s3_server, s3_bucket):
    # Long enough that the first download is in time on a loaded machine.
    storage = S3Storage(s3_config(s3_server.endpoint_url, s3_bucket), url_ttl_s=5)
    stored = storage.put(PNG, "png")
    url = storage.url(stored.key, "")
    assert "X-Amz-Expires=5" in url
    assert httpx.get(url, timeout=10).content == PNG
    time.sleep(6.2)  # the signature's time has one-second resolution
    expired = httpx.get(url, timeout=10)
    assert expired.status_code == 403
    assert b"AccessDenied" in expired.content


def test_test_server_refuses_urls_signed_long_ago(storage):
    """The test server's expiry rule itself: a fresh URL works, one dated 2020 does not."""
    stored = storage.put(PNG, "png")
    url = storage.url(stored.key, "")
    assert httpx.get(url, timeout=10).status_code == 200
    old = httpx.URL(url).copy_set_param("X-Amz-Date", "20200101T000000Z")
    assert httpx.get(old, timeout=10).status_code == 403


def test_stopped_server_raises_storage_error_quickly(s3_bucket):
    server = S3Server().start()
    config = s3_config(server.endpoint_url, s3_bucket, connect_timeout_s=1, max_attempts=2)
    storage = S3Storage(config, url_ttl_s=60)
    # Bounded by our settings, not boto's defaults (60 s timeouts, 5 tries in legacy mode).
    client_config = storage.client.meta.config
    assert client_config.connect_timeout == 1
    assert client_config.retries == {"mode": "standard", "total_max_attempts": 2}
    server.stop()
    for action in (
        lambda: storage.put(PNG, "png"),
        lambda: storage.exists("a" * 64 + ".png"),
        lambda: storage.delete("a" * 64 + ".png"),
    ):
        with pytest.raises(StorageError) as caught:
            action()
        assert caught.value.status_code == 503
        assert caught.value.code == "storage_unavailable"
        assert "127.0.0.1" not in caught.value.message
        assert s3_bucket not in caught.value.message


def test_missing_bucket_raises_and_leaves_nothing(s3_server, s3_bucket):
    missing = s3_bucket + "-missing"
    storage = S3Storage(s3_config(s3_server.endpoint_url, missing, max_attempts=1), url_ttl_s=60)
    with pytest.raises(StorageError) as caught:
        storage.put(PNG, "png", key=job_result_key("job_9", 0, "png"))
    assert missing not in caught.value.message
    assert "test-secret" not in caught.value.message
    client = s3_client(s3_server)
    client.create_bucket(Bucket=missing)
    assert client.list_objects_v2(Bucket=missing).get("KeyCount") == 0


def test_secret_never_reaches_message_or_repr(s3_server, s3_bucket, monkeypatch):
    # An unreachable port and a secret in the environment: the error must name neither.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak-me")
    config = s3_config(
        f"http://127.0.0.1:{free_port()}", s3_bucket, connect_timeout_s=1, max_attempts=1
    )
    storage = S3Storage(config, url_ttl_s=60)
    with pytest.raises(StorageError) as caught:
        storage.put(PNG, "png")
    assert "do-not-leak-me" not in str(caught.value)
    assert "do-not-leak-me" not in repr(config) and "do-not-leak-me" not in repr(storage)


def test_build_storage_picks_s3(s3_server, s3_bucket):
    config = AppConfig.model_validate(
        {
            "models": [
                {"name": "m", "family": "stable-diffusion", "path": "tiny:stable-diffusion"}
            ],
            "storage": {
                "kind": "s3",
                "url_ttl_s": 120,
                "s3": s3_config(s3_server.endpoint_url, s3_bucket).model_dump(),
            },
        }
    )
    storage = build_storage(config)
    assert isinstance(storage, S3Storage)
    stored = storage.put(PNG, "png")
    assert "X-Amz-Expires=120" in storage.url(stored.key, "")
