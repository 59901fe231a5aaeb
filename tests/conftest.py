"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.databases import postgres_schema_url
from tests.s3_server import S3Server

# moto accepts any credentials; boto3 only needs some to sign with.
S3_TEST_CREDENTIALS = {"access_key_id": "test-access-key", "secret_access_key": "test-secret"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new, empty bucket on the shared server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:20]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=S3_TEST_CREDENTIALS["access_key_id"],
        aws_secret_access_key=S3_TEST_CREDENTIALS["secret_access_key"],
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The job store's URL on each real backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        with postgres_schema_url() as url:
            yield url
