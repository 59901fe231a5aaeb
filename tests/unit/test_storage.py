"""Local image storage (content-addressed and job keys, safe paths) and signed /files URLs."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from serve_app import environment
from serve_app.config import AppConfig
from serve_app.errors import StorageError
from serve_app.storage import (
    InvalidKeyError,
    LocalStorage,
    UrlSigner,
    build_storage,
    job_result_key,
)
from serve_app.storage.keys import check_key, is_valid_key

SECRET = b"0123456789abcdef0123456789abcdef"
KEY = "a" * 64 + ".png"
NOW = 1_700_000_000


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "images")


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(SECRET, ttl_s=600)


# --- signing --------------------------------------------------------------------------------


def test_sign_verify_roundtrip(signer):
    expires, signature = signer.sign(KEY, now=NOW)
    assert expires == NOW + 600
    assert len(signature) == 64
    assert signer.verify(KEY, expires, signature, now=NOW)
    assert signer.verify(KEY, expires, signature, now=expires)


def test_sign_uses_current_time_by_default(signer):
    expires, signature = signer.sign(KEY)
    assert signer.verify(KEY, expires, signature)


def test_expired_signature_is_refused(signer):
    expires, signature = signer.sign(KEY, now=NOW)
    assert not signer.verify(KEY, expires, signature, now=expires + 1)


def test_signature_for_another_key_is_refused(signer):
    expires, signature = signer.sign(KEY, now=NOW)
    assert not signer.verify("b" * 64 + ".png", expires, signature, now=NOW)
    assert not signer.verify("a" * 64 + ".jpeg", expires, signature, now=NOW)


def test_extended_expiry_is_refused(signer):
    expires, signature = signer.sign(KEY, now=NOW)
    assert not signer.verify(KEY, expires + 3600, signature, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda sig: sig[:-1] + ("0" if sig[-1] != "0" else "1"),
        lambda sig: sig.upper(),
        lambda sig: sig[:32],
        lambda sig: "",
        lambda sig: sig + "0",
    ],
)
def test_tampered_signature_is_refused(signer, tamper):
    expires, signature = signer.sign(KEY, now=NOW)
    assert not signer.verify(KEY, expires, tamper(signature), now=NOW)


def test_signature_from_another_secret_is_refused(signer):
    other = UrlSigner(b"another secret of enough length", ttl_s=600)
    expires, signature = other.sign(KEY, now=NOW)
    assert not signer.verify(KEY, expires, signature, now=NOW)


def test_non_ascii_signature_is_refused_not_raised(signer):
    expires, _ = signer.sign(KEY, now=NOW)
    assert signer.verify(KEY, expires, "\u00e9" * 64, now=NOW) is False


def test_short_secret_is_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        UrlSigner(b"too short", ttl_s=60)


def test_secret_from_environment(monkeypatch):
    monkeypatch.setenv("IMAGE_SERVICE_SIGNING_SECRET", "from-the-environment")
    assert environment.signing_secret() == b"from-the-environment"
    monkeypatch.setenv("IMAGE_SERVICE_SIGNING_SECRET", "")
    assert environment.signing_secret() is None
    monkeypatch.delenv("IMAGE_SERVICE_SIGNING_SECRET")
    assert environment.signing_secret() is None


def test_secret_from_a_mounted_file(monkeypatch, tmp_path):
    monkeypatch.delenv("IMAGE_SERVICE_SIGNING_SECRET", raising=False)
    (tmp_path / "signing").write_text("from-a-mounted-file\n")
    monkeypatch.setenv("IMAGE_SERVICE_SIGNING_SECRET_FILE", str(tmp_path / "signing"))
    assert environment.signing_secret() == b"from-a-mounted-file"
    monkeypatch.setenv("IMAGE_SERVICE_SIGNING_SECRET", "the-variable-itself-wins")
    assert environment.signing_secret() == b"the-variable-itself-wins"
    monkeypatch.delenv("IMAGE_SERVICE_SIGNING_SECRET")
    monkeypatch.setenv("IMAGE_SERVICE_SIGNING_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="IMAGE_SERVICE_SIGNING_SECRET_FILE names .*missing"):
        environment.signing_secret()


def test_a_short_secret_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("IMAGE_SERVICE_SIGNING_SECRET", "short")
    with pytest.raises(RuntimeError, match="shorter than 16 bytes"):
        environment.signing_secret()


# --- local storage --------------------------------------------------------------------------


def test_put_is_content_addressed(storage):
    data = b"\x89PNG not really"
    stored = storage.put(data, "png")
    digest = hashlib.sha256(data).hexdigest()
    assert stored.key == f"{digest}.png"
    assert stored.sha256 == digest
    assert stored.content_type == "image/png"
    assert (storage.root / stored.key).read_bytes() == data


@pytest.mark.parametrize(("fmt", "content_type"), [("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_put_content_types(storage, fmt, content_type):
    stored = storage.put(b"x", fmt)
    assert stored.key.endswith(f".{fmt}")
    assert stored.content_type == content_type


def test_put_is_idempotent(storage):
    first = storage.put(b"same bytes", "png")
    second = storage.put(b"same bytes", "png")
    assert first == second
    assert storage.path_for(first.key).read_bytes() == b"same bytes"
    assert sorted(p.name for p in storage.root.iterdir()) == [first.key]  # no temp files left


def test_different_bytes_get_different_keys(storage):
    assert storage.put(b"one", "png").key != storage.put(b"two", "png").key


def test_path_for_finds_stored_file(storage):
    stored = storage.put(b"pixels", "webp")
    path = storage.path_for(stored.key)
    assert path == storage.root / stored.key
    assert path.read_bytes() == b"pixels"


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "../" + "a" * 64 + ".png",
        "a" * 64 + ".png/../../x",
        "/etc/passwd",
        "..",
        "",
        ".signing_key",
        "A" * 64 + ".png",
        "a" * 63 + ".png",
        "a" * 65 + ".png",
        "a" * 64 + ".gif",
        "a" * 64,
        "g" * 64 + ".png",
    ],
)
def test_path_for_refuses_malformed_keys(storage, key):
    storage.put(b"something", "png")
    storage.signing_secret()
    assert storage.path_for(key) is None


def test_path_for_refuses_traversal_to_existing_file(tmp_path):
    outside = tmp_path / ("b" * 64 + ".png")
    outside.write_bytes(b"secret")
    storage = LocalStorage(tmp_path / "images")
    assert storage.path_for("../" + outside.name) is None


def test_path_for_unknown_key_is_none(storage):
    assert storage.path_for("c" * 64 + ".png") is None


def test_signing_secret_is_stable_across_instances(tmp_path):
    first = LocalStorage(tmp_path / "images").signing_secret()
    second = LocalStorage(tmp_path / "images").signing_secret()
    assert first == second
    assert len(first) == 64
    assert bytes.fromhex(first.decode())  # hex
    key_file = tmp_path / "images" / ".signing_key"
    assert key_file.stat().st_mode & 0o077 == 0


def test_signing_secret_differs_between_roots(tmp_path):
    assert (
        LocalStorage(tmp_path / "a").signing_secret()
        != LocalStorage(tmp_path / "b").signing_secret()
    )


def test_signing_secret_works_with_url_signer(storage):
    signer = UrlSigner(storage.signing_secret(), ttl_s=60)
    expires, signature = signer.sign(KEY, now=NOW)
    assert UrlSigner(storage.signing_secret(), ttl_s=60).verify(KEY, expires, signature, now=NOW)


# --- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["a" * 64 + ".png", "0" * 64 + ".webp", "jobs/job_1/0.png", "jobs/A-b_9/12.jpeg"],
)
def test_valid_keys(key):
    assert is_valid_key(key)
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "jobs/../0.png",
        "jobs/job/../0.png",
        "jobs/job/0.png/..",
        "jobs//0.png",
        "jobs/job/01.png",
        "jobs/job/-1.png",
        "jobs/job/x.png",
        "jobs/job/0.gif",
        "jobs/job.1/0.png",
        "jobs/job 1/0.png",
        "jobs/job%2F1/0.png",
        "jobs/" + "j" * 65 + "/0.png",
        "jobs/job/0/1.png",
        "/jobs/job/0.png",
        "JOBS/job/0.png",
        "other/job/0.png",
        "jobs/job/0.png\n",
        "jobs/jöb/0.png",
        "./" + "a" * 64 + ".png",
    ],
)
def test_invalid_keys(key):
    assert not is_valid_key(key)
    with pytest.raises(InvalidKeyError):
        check_key(key)


def test_job_result_key():
    assert job_result_key("job_1", 3, "webp") == "jobs/job_1/3.webp"
    for job_id in ("..", "a/b", "", "x" * 65):
        with pytest.raises(InvalidKeyError):
            job_result_key(job_id, 0, "png")
    with pytest.raises(InvalidKeyError):
        job_result_key("job", -1, "png")
    with pytest.raises(InvalidKeyError):
        job_result_key("job", 0, "gif")


# --- local URLs, failures and the factory -------------------------------------------------------


def test_url_is_signed_for_the_key(tmp_path):
    storage = LocalStorage(tmp_path, url_ttl_s=600, signing_secret=SECRET)
    key = job_result_key("job_1", 2, "png")
    url = httpx.URL(storage.url(key, "http://gateway:8000/"))
    assert url.path == f"/files/{key}"
    assert url.host == "gateway"
    expires = int(url.params["expires"])
    assert UrlSigner(SECRET, 600).verify(key, expires, url.params["sig"])


def test_url_prefers_public_base_url(tmp_path):
    storage = LocalStorage(tmp_path, public_base_url="https://images.example.com/")
    assert storage.url("a" * 64 + ".png", "http://internal:8000").startswith(
        "https://images.example.com/files/" + "a" * 64 + ".png?expires="
    )


def test_failed_write_raises_storage_error_and_leaves_no_temp_file(storage):
    key = job_result_key("job_1", 0, "png")
    (storage.root / key).mkdir(parents=True)  # a directory where the file should go
    with pytest.raises(StorageError) as caught:
        storage.put(b"data", "png", key=key)
    assert str(storage.root) not in caught.value.message
    assert caught.value.code == "storage_unavailable"
    assert [p.name for p in (storage.root / "jobs" / "job_1").iterdir()] == ["0.png"]


def test_no_signing_key_file_until_a_url_is_made(storage):
    storage.put(b"x", "png")
    assert not (storage.root / ".signing_key").exists()
    storage.url("a" * 64 + ".png", "http://h")
    assert (storage.root / ".signing_key").exists()


def test_build_storage_local(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_SERVICE_SIGNING_SECRET", SECRET.decode())
    config = AppConfig.model_validate(
        {
            "models": [
                {"name": "m", "family": "stable-diffusion", "path": "tiny:stable-diffusion"}
            ],
            "storage": {"root": str(tmp_path / "img")},
        }
    )
    storage = build_storage(config)
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "img"
    assert storage.signer.ttl_s == 3600
