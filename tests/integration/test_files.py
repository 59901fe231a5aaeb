"""/files/{key} on local storage: job result keys are served like content-addressed ones,
behind the same signature, with the right type and nosniff; other paths are not."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serve_app.storage import LocalStorage, job_result_key
from tests.helpers import assert_error

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def storage(app_args) -> LocalStorage:
    # The app's own folder: the signing key file there is the one the Gateway uses.
    return LocalStorage(Path(app_args["storage"]["root"]), url_ttl_s=600)


def test_job_key_is_served_with_its_type(client, storage):
    key = job_result_key("job_files_1", 0, "webp")
    storage.put(b"RIFF\x00\x00\x00\x00WEBPVP8 not really", "webp", key=key)
    response = client.get(storage.url(key, str(client.base_url)))
    assert response.status_code == 200, response.text
    assert response.content == b"RIFF\x00\x00\x00\x00WEBPVP8 not really"
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_signature_is_bound_to_the_key(client, storage):
    first = job_result_key("job_files_2", 0, "png")
    second = job_result_key("job_files_2", 1, "png")
    storage.put(b"first", "png", key=first)
    storage.put(b"second", "png", key=second)
    url = httpx.URL(storage.url(first, str(client.base_url)))
    assert client.get(url).content == b"first"
    swapped = url.copy_with(path=f"/files/{second}")
    assert_error(client.get(swapped), 403, "invalid_signature")


def test_signed_traversal_is_still_refused(client, storage):
    # Even a correctly signed key must match the key rules before it names a file.
    key = "jobs/%2E%2E/%2E%2E/.signing_key"
    decoded = "jobs/../../.signing_key"
    expires, signature = storage.signer.sign(decoded)
    response = client.get(f"/files/{key}?expires={expires}&sig={signature}")
    assert_error(response, 404, "file_not_found")
