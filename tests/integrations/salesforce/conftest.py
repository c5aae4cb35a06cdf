"""The Salesforce node's tests: each on its own SQLite copy of the session template (the node
touches no store code of its own), with fast settings and a fresh local Salesforce."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowyard.settings import Settings
from support.salesforce import FakeSalesforce, fast_settings, new_fake, sqlite_copy


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    return sqlite_copy(tmp_path, sqlite_template)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return fast_settings(db_url)


@pytest.fixture
def fake() -> Iterator[FakeSalesforce]:
    sf = new_fake()
    try:
        yield sf
    finally:
        sf.stop()
