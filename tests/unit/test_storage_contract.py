"""What every Storage backend promises, run against the local folder and a real S3 server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx
import pytest

from serve_app.storage import InvalidKeyError, LocalStorage, Storage, job_result_key
from serve_app.storage.s3 import S3Storage
from tests.unit.test_s3_storage import s3_config

Reader = Callable[[str], bytes]


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> tuple[Storage, Reader]:
    """A fresh store and a way to read a key's bytes back without the store's own API."""
    if request.param == "local":
        local = LocalStorage(tmp_path / "images")
        return local, lambda key: (local.root / key).read_bytes()
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    s3 = S3Storage(s3_config(server.endpoint_url, bucket), url_ttl_s=60)
    return s3, lambda key: httpx.get(s3.url(key, ""), timeout=10).content


def test_put_without_key_is_content_addressed(backend):
    storage, read = backend
    stored = storage.put(b"some pixels", "png")
    digest = hashlib.sha256(b"some pixels").hexdigest()
    assert (stored.key, stored.sha256, stored.content_type) == (
        f"{digest}.png",
        digest,
        "image/png",
    )
    assert storage.put(b"some pixels", "png") == stored
    assert read(stored.key) == b"some pixels"


def test_given_key_holds_the_last_bytes(backend):
    storage, read = backend
    key = job_result_key("job-42", 1, "webp")
    storage.put(b"first run", "webp", key=key)
    second = storage.put(b"second run", "webp", key=key)
    assert (second.key, second.content_type) == (key, "image/webp")
    assert second.sha256 == hashlib.sha256(b"second run").hexdigest()
    assert read(key) == b"second run"


def test_exists_and_delete(backend):
    storage, _ = backend
    key = job_result_key("job_7", 0, "jpeg")
    assert not storage.exists(key)
    storage.put(b"jpeg bytes", "jpeg", key=key)
    assert storage.exists(key)
    storage.delete(key)
    assert not storage.exists(key)
    storage.delete(key)  # deleting a missing key is harmless


@pytest.mark.parametrize(
    "key",
    ["../x.png", "jobs/../../etc/passwd", "/abs.png", "jobs/a/b/0.png", "a" * 64 + ".gif"],
)
def test_bad_keys_are_refused_everywhere(backend, key):
    storage, _ = backend
    for action in (
        lambda: storage.put(b"x", "png", key=key),
        lambda: storage.url(key, "http://h"),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ):
        with pytest.raises(InvalidKeyError):
            action()


def test_key_must_match_format(backend):
    storage, _ = backend
    with pytest.raises(InvalidKeyError):
        storage.put(b"x", "png", key=job_result_key("job_1", 0, "jpeg"))
    with pytest.raises(InvalidKeyError):
        storage.put(b"x", "gif")
