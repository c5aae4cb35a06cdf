"""The samples of examples/ end to end: the definitions as shipped, saved through the service
with the credentials they name (``salesforce``, ``mail``, ``instagram``) pointing at the local
fakes, run by a real in-process worker over real sockets, on SQLite and PostgreSQL (the root
conftest's ``db_url``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from fakes.graph import FakeGraph
from fakes.salesforce import FakeSalesforce
from fakes.smtp import FakeSmtp
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType
from support.harness import WAIT_S
from support.salesforce import add_credential, new_fake
from support.samples import COMMENTS, FAN, IG_ACCOUNT, IG_TOKEN, OTHER_FAN


@pytest.fixture
def salesforce() -> Iterator[FakeSalesforce]:
    fake = new_fake()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
async def relay() -> AsyncIterator[FakeSmtp]:
    """A plain SMTP relay on loopback without AUTH (the email node would send no password
    in clear; it needs none here)."""
    fake = await FakeSmtp(mode="plain").start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with FakeGraph(
        token=IG_TOKEN,
        account_id=IG_ACCOUNT,
        open_window={FAN, OTHER_FAN},
        comments=set(COMMENTS),
    ) as fake:
        yield fake


@pytest.fixture
async def providers(
    container: Container, salesforce: FakeSalesforce, relay: FakeSmtp, graph: FakeGraph
) -> Container:
    """The container with the three credentials the samples name, on the fakes."""
    await add_credential(container, salesforce, "salesforce")
    await container.credentials.create(
        "mail", CredentialType.SMTP, {"host": "127.0.0.1", "port": relay.port, "starttls": False}
    )
    await container.credentials.create(
        "instagram",
        CredentialType.META_GRAPH,
        {"access_token": IG_TOKEN, "account_id": IG_ACCOUNT, "base_url": graph.url},
    )
    return container


@pytest.fixture
async def worker(providers: Container) -> AsyncIterator[Container]:
    """The container, its credentials, and a worker running in the background."""
    worker = providers.new_worker()
    task = asyncio.create_task(worker.run())
    try:
        yield providers
    finally:
        worker.stop()
        async with asyncio.timeout(WAIT_S):
            await task
