"""Shared fixtures: databases (SQLite and PostgreSQL), stores, containers, the app on a
container and its in-process clients, a local HTTP server."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI

from flowyard.api import create_app
from flowyard.bootstrap import Container, build
from flowyard.security import passwords
from flowyard.settings import Settings
from flowyard.store import Store, open_store
from support.api import BASE_URL, admin_client
from support.auth import SECRET_KEY
from support.http import RecordingServer
from support.pg import (
    create_database,
    database_name,
    drop_database,
    recycle,
    schema_fingerprint,
    skip_or_fail_without_pg,
)

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


#: argon2 parameters for the in-process tests: each hash or check of the default RFC 9106
#: profile costs ~0.1 s of CPU (0.2 s on a slow CI machine), and hundreds of tests create a
#: user or log in. What the tests check is who may log in, not the hash's cost; the
#: subprocess tests (serve, the CLI) keep the default profile.
CHEAP_ARGON2 = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(passwords, "PasswordHasher", functools.partial(PasswordHasher, **CHEAP_ARGON2))
        yield


async def _migrate(url: str) -> None:
    """Migrate the database at ``url`` to head, then close every connection to it."""
    s = open_store(url)
    try:
        await s.migrate()
    finally:
        await s.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session (per xdist worker); tests get copies."""
    path = tmp_path_factory.mktemp("template") / "flowyard.db"
    asyncio.run(_migrate(f"sqlite:///{path}"))
    # The last connection closed checkpointed the WAL: the one file is the whole database
    # (beside the writers' lock file, which stays: decision 0041).
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{path.name}-writer.lock"]
    return path


class PgCopies:
    """Databases like a migrated template, for one test each.

    A copy of the template costs 0.1-0.4 s (``WAL_LOG``: see
    :func:`support.pg.create_database`; a test often takes less), so a test's database is
    emptied and handed to the next test when it can stand for a fresh copy
    (:func:`support.pg.recycle`, ~10 ms), and dropped in the background otherwise. One copy is
    kept in the making for when no emptied database is at hand. :meth:`close` waits for all of
    it and drops what is left."""

    def __init__(self, template_url: str) -> None:
        self.template = database_name(template_url)
        self.fingerprint = schema_fingerprint(template_url)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="pg-copies")
        self._made: deque[Future[str]] = deque()
        self._clean: list[str] = []
        self._drops: list[Future[None]] = []

    def _copy(self) -> None:
        self._made.append(self._pool.submit(create_database, self.template, strategy="WAL_LOG"))

    def take(self) -> str:
        """An emptied database or a fresh copy of the template (its URL)."""
        if not self._made:
            self._copy()
        if self._clean:
            return self._clean.pop()
        url = self._made.popleft().result()
        self._copy()
        return url

    def give_back(self, url: str) -> None:
        """Empty ``url`` for the next test, or else drop it."""
        if recycle(url, self.fingerprint):
            self._clean.append(url)
        else:
            self.drop(url)

    def drop(self, url: str) -> None:
        """Drop ``url`` once a thread gets to it (errors surface in :meth:`close`)."""
        self._drops = [d for d in self._drops if not d.done() or d.exception() is not None]
        self._drops.append(self._pool.submit(drop_database, url))

    def close(self) -> None:
        while self._made:
            self._clean.append(self._made.popleft().result())
        self._drops.extend(self._pool.submit(drop_database, url) for url in self._clean)
        self._pool.shutdown(wait=True)
        for done in self._drops:
            done.result()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[PgCopies]:
    """A PostgreSQL database migrated once per session (per xdist worker, named after it),
    dropped at the end, and the copies tests get of it (CREATE DATABASE ... TEMPLATE, which
    needs it to have no connections: the store that migrated it is closed)."""
    skip_or_fail_without_pg()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    url = create_database(prefix=f"flowyard_tmpl_{worker}")
    try:
        asyncio.run(_migrate(url))
        copies = PgCopies(url)
        try:
            yield copies
        finally:
            copies.close()
    finally:
        drop_database(url)


def _fresh_database(
    request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool
) -> Iterator[str]:
    """A new database on the backend of ``request.param``: a copy of the session's migrated
    template, or empty."""
    if request.param == "sqlite":
        path = tmp_path / "flowyard.db"
        if migrated:
            shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    skip_or_fail_without_pg()
    if not migrated:
        url = create_database()
        try:
            yield url
        finally:
            drop_database(url)
        return
    copies: PgCopies = request.getfixturevalue("pg_template")
    url = copies.take()
    try:
        yield url
    finally:
        copies.give_back(url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    skip_or_fail_without_pg()
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite (a fresh file) and on PostgreSQL (a fresh database), already
    at the newest migration: a copy of the session's template, migrated once. The migration
    chain itself runs on empty databases in tests/store/test_migrations.py."""
    yield from _fresh_database(request, tmp_path, migrated=True)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL, on a fresh database with no schema at all."""
    yield from _fresh_database(request, tmp_path, migrated=False)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated store on each backend (``migrate`` finds the copied schema current)."""
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
def app(container: Container) -> FastAPI:
    """The app mounted on the test container (in-process clients run no lifespan: no
    workers of its own)."""
    return create_app(container.settings, container=container)


@pytest.fixture
async def api_client(app: FastAPI, container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """An admin's in-process client of ``app`` (paths start with /api/v1)."""
    async with admin_client(container, app=app) as client:
        yield client


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` that sends no credentials."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        yield c


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    """A local recording HTTP server."""
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()
