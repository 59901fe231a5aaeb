"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import pytest

from tests.databases import postgres_schema_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The job store's URL on each real backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        with postgres_schema_url() as url:
            yield url
