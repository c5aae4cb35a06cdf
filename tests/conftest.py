"""Shared fixtures: databases (SQLite and PostgreSQL), stores, containers, a local HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flowyard.bootstrap import Container, build
from flowyard.settings import Settings
from flowyard.store import Store, open_store
from support.auth import SECRET_KEY
from support.http import RecordingServer
from support.pg import create_database, drop_database, skip_or_fail_without_pg

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


#: The suite's fakes listen on loopback, which the default egress policy refuses: trust it
#: (tests of the policy itself build their own settings).
LOOPBACK_ALLOW = "127.0.0.1,localhost,::1"


@pytest.fixture(autouse=True, scope="session")
def _secret_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A master key for every process of the run (no key files beside PostgreSQL tests),
    the loopback fakes on the egress allow-list, and a data directory of the run's own: a
    default database or key file never lands in the real home directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWYARD_SECRET_KEY", SECRET_KEY)
        mp.setenv("FLOWYARD_EGRESS_ALLOW", LOOPBACK_ALLOW)
        mp.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        mp.delenv("FLOWYARD_DB", raising=False)
        mp.delenv("FLOWYARD_DB_URL", raising=False)
        yield


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test."""
    skip_or_fail_without_pg()
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite (a fresh file) and on PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'flowyard.db'}"
        return
    skip_or_fail_without_pg()
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated store on each backend."""
    s = open_store(db_url)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings for a container on each backend; quick polling for tests."""
    return Settings(
        db_url=db_url, poll_interval_s=0.05, reap_interval_s=0.5, workers=0, load_plugins=False
    )


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    """A built, migrated container (no workers started)."""
    c = await build(settings)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    """A local recording HTTP server."""
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()
