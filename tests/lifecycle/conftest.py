"""Fixtures of the lifecycle tests: an API client and an in-process worker running in the
background (both on the ``container`` of each backend)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from flowyard.bootstrap import Container
from flowyard.worker import Worker


@pytest.fixture
def client(api_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The suite's admin client (``api_client``), by the name these tests use."""
    return api_client


@pytest.fixture
async def worker(container: Container) -> AsyncIterator[Worker]:
    """A worker executing steps in the background until the test ends."""
    w = container.new_worker()
    task = asyncio.create_task(w.run(), name="lifecycle-worker")
    try:
        yield w
    finally:
        w.stop()
        await task
