"""The application with `storage.kind: s3` against a real S3-compatible server (moto in
server mode on 127.0.0.1): `response_format: url` returns a presigned URL to a real PNG."""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from tests.conftest import s3_client
from tests.helpers import assert_error
from tests.integration.conftest import deploy_and_wait
from tests.integration.jobs_helpers import generation_job, wait_for_job, wait_until
from tests.tcp_gate import TcpGate

pytestmark = pytest.mark.integration
APP_NAME = "images-s3"


@pytest.fixture(scope="module")
def s3_gate(s3_server) -> Iterator[TcpGate]:
    """The service reaches S3 through this gate, which a test can shut and open again."""
    gate = TcpGate(s3_server.port).open()
    yield gate
    gate.shut()


@pytest.fixture(scope="module")
def s3_app(serve_port, app_args, s3_gate, s3_bucket_module, tmp_path_factory) -> str:
    from ray import serve

    args = copy.deepcopy(app_args)
    sd_tiny = next(m for m in args["models"] if m["name"] == "sd-tiny")
    sd_tiny["defaults"] = {"size": "64x64", "steps": 2, "guidance_scale": 5.0}
    sd_tiny["batching"] = {"max_batch_size": 4}
    args["models"] = [sd_tiny]
    # Its own job store: its JobRunner must not take the main application's jobs.
    args["jobs"] = {
        **args["jobs"],
        "store_url": f"sqlite:///{tmp_path_factory.mktemp('s3')}/jobs.db",
    }
    args["storage"] = {
        "kind": "s3",
        "url_ttl_s": 600,
        "s3": {
            "bucket": s3_bucket_module,
            "prefix": "results/",
            "endpoint_url": s3_gate.url,
            "region": "us-east-1",
            "addressing_style": "path",
            "max_attempts": 2,
        },
    }
    url = deploy_and_wait(args, APP_NAME, "/s3", serve_port)
    yield url
    serve.delete(APP_NAME)


@pytest.fixture(scope="module")
def s3_bucket_module(s3_server) -> str:
    client = s3_client(s3_server)
    client.create_bucket(Bucket="integration-results")
    return "integration-results"


def test_url_response_is_a_presigned_s3_url_to_a_png(s3_app, s3_server, s3_gate, s3_bucket_module):
    response = httpx.post(
        f"{s3_app}/v1/images/generations",
        json={
            "model": "sd-tiny",
            "prompt": "a red bicycle",
            "size": "64x64",
            "steps": 2,
            "seed": 7,
            "response_format": "url",
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    url = item["url"]
    assert url.startswith(f"{s3_gate.url}/{s3_bucket_module}/results/")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url

    download = httpx.get(url, timeout=10)
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(download.content), formats=["PNG"])
    image.load()
    assert image.size == (64, 64)

    key = urlsplit(url).path.removeprefix(f"/{s3_bucket_module}/")
    listed = s3_client(s3_server).list_objects_v2(Bucket=s3_bucket_module, Prefix="results/")
    assert key in [entry["Key"] for entry in listed["Contents"]]


def test_files_route_serves_nothing_with_s3_storage(s3_app):
    key = "0" * 64 + ".png"
    response = httpx.get(f"{s3_app}/files/{key}?expires=9999999999&sig=abc", timeout=10)
    assert_error(response, 404, "file_not_found")


def test_a_job_keeps_its_images_in_s3_under_keys_from_its_id(s3_app, s3_server, s3_bucket_module):
    with httpx.Client(base_url=s3_app, timeout=60) as client:
        job = client.post("/v1/jobs", json=generation_job("s3 job", n=2)).json()
        done = wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    listed = s3_client(s3_server).list_objects_v2(
        Bucket=s3_bucket_module, Prefix=f"results/jobs/{job['id']}/"
    )
    assert sorted(entry["Key"] for entry in listed["Contents"]) == [
        f"results/jobs/{job['id']}/0.png",
        f"results/jobs/{job['id']}/1.png",
    ]
    for image in done["result"]["images"]:
        assert "X-Amz-Signature=" in image["url"]
        download = httpx.get(image["url"], timeout=10)
        assert hashlib.sha256(download.content).hexdigest() == image["sha256"]


def test_s3_unreachable_then_back_costs_retries_not_jobs(
    s3_app, s3_gate, s3_server, s3_bucket_module
):
    """The S3 endpoint stops answering (connections refused) while jobs run and a caller
    asks for a URL: the caller gets 503 storage_unavailable with Retry-After, base64
    answers go on, and every job waits the outage out without spending an attempt and
    ends succeeded once S3 is back, its images there."""
    url_body = {"model": "sd-tiny", "prompt": "outage", "size": "64x64", "steps": 2}
    with httpx.Client(base_url=s3_app, timeout=60) as client:
        s3_gate.shut()
        try:
            job_ids = [
                client.post("/v1/jobs", json=generation_job(f"s3 outage {i}")).json()["id"]
                for i in range(3)
            ]
            refused = client.post(
                "/v1/images/generations", json={**url_body, "response_format": "url"}
            )
            b64 = client.post(
                "/v1/images/generations", json={**url_body, "response_format": "b64_json"}
            )
            wait_until(
                lambda: all(client.get(f"/v1/jobs/{j}").json()["error"] for j in job_ids),
                120,
                "every job met the outage",
            )
        finally:
            s3_gate.open()
        jobs = [wait_for_job(client, job_id) for job_id in job_ids]
    assert_error(refused, 503, "storage_unavailable")
    assert refused.headers["retry-after"]
    assert b64.status_code == 200, b64.text
    assert [job["status"] for job in jobs] == ["succeeded"] * len(jobs), jobs
    assert [job["attempts"] for job in jobs] == [1] * len(jobs)
    s3 = s3_client(s3_server)
    for job in jobs:
        for image in job["result"]["images"]:
            key = urlsplit(image["url"]).path.removeprefix(f"/{s3_bucket_module}/")
            stored = s3.get_object(Bucket=s3_bucket_module, Key=key)["Body"].read()
            assert hashlib.sha256(stored).hexdigest() == image["sha256"]


def test_an_s3_outage_fails_the_job_instead_of_a_dangling_success(
    s3_app, s3_server, s3_bucket_module
):
    """Runs last in this module: it takes the bucket away."""
    s3 = s3_client(s3_server)
    for entry in s3.list_objects_v2(Bucket=s3_bucket_module).get("Contents", []):
        s3.delete_object(Bucket=s3_bucket_module, Key=entry["Key"])
    s3.delete_bucket(Bucket=s3_bucket_module)
    with httpx.Client(base_url=s3_app, timeout=60) as client:
        job = client.post("/v1/jobs", json=generation_job("no bucket")).json()
        done = wait_for_job(client, job["id"])
    # Every attempt made its image and failed to store it; the job never said succeeded.
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"]["code"] == "storage_unavailable"
    assert done["attempts"] == 3
