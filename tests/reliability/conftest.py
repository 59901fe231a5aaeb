"""One service for the whole campaign (tests/reliability/service.py), its figures, and the
webhook receiver the integration tests use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import webhook_receiver  # noqa: F401  (a fixture)
from tests.reliability.figures import Figures
from tests.reliability.service import Campaign


@pytest.fixture(scope="session")
def campaign(tmp_path_factory, tiny_cache, webhook_receiver) -> Iterator[Campaign]:  # noqa: F811
    service = Campaign(tmp_path_factory.mktemp("campaign"), tiny_cache, webhook_receiver.host)
    try:
        yield service
    finally:
        service.close()


@pytest.fixture(scope="session")
def figures() -> Figures:
    report = os.environ.get("RELIABILITY_REPORT")
    return Figures(Path(report) if report else None)
