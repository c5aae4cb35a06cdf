"""Fixtures of the security tests: the app on a container, an anonymous client, tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from flowyard.api import create_app
from flowyard.bootstrap import Container


@pytest.fixture
def app(container: Container) -> FastAPI:
    """The app mounted on the test container (no lifespan)."""
    return create_app(container.settings, container=container)


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no credentials."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
