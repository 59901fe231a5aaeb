"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import postgres_schema_url
from tests.s3_server import S3Server

# moto accepts any credentials; boto3 only needs some to sign with. The service reads them
# from the environment (never from its config), so they are set here, before any Ray
# worker starts, to reach the replicas too.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test-access-key")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test-secret")


def s3_client(server: S3Server):
    """A plain boto3 client on the test server, to look behind the service's back."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
    )


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """Where tiny models are built: once per test session, by the first test that loads one,
    for unit and integration tests alike (a build lands by an atomic rename)."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new, empty bucket on the shared server."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client(s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The job store's URL on each real backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        with postgres_schema_url() as url:
            yield url
