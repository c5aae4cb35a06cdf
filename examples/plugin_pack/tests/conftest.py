"""Fixtures of the pack's tests: flowyard itself, built in-process on a SQLite file of the
test's own, with this pack registered as flowyard registers it (through ``register``); the
local Discord of :mod:`flowyard_example_pack.testing`. Nothing of flowyard is mocked: the
steps run on a real worker, and the requests go over real sockets through flowyard's
outbound layer (credential origins, egress policy)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from flowyard_example_pack import register
from flowyard_example_pack.testing import Channel, FakeDiscord

from flowyard.bootstrap import Container, build
from flowyard.domain.credentials import CredentialType
from flowyard.nodes.registry import default_registry
from flowyard.service import RunDetail
from flowyard.settings import Settings

BOT_TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GxYz12.abcdefghijklmnopqrstuvwxyz0123"
CHANNEL = "1100000000000000100"
LOCKED_CHANNEL = "1100000000000000200"


@pytest.fixture(autouse=True)
def _flowyard_env(tmp_path: Path) -> Iterator[None]:
    """A master key for the credential vault, and the local Discord's loopback address on
    the egress allow-list (the default policy refuses private addresses)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWYARD_SECRET_KEY", "22" * 32)
        mp.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
        for name in [k for k in os.environ if k.startswith("FLOWYARD_") and "SECRET" not in k]:
            mp.delenv(name)
        yield


@pytest.fixture
async def container(tmp_path: Path) -> AsyncIterator[Container]:
    """flowyard with its built-in node types and this pack (no other plugin)."""
    registry = default_registry(load_plugins=False)
    register(registry)
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'flowyard.db'}",
        workers=0,
        poll_interval_s=0.05,
        load_plugins=False,
        egress_allow=["127.0.0.1"],
    )
    built = await build(settings, registry=registry)
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
def discord() -> Iterator[FakeDiscord]:
    with FakeDiscord(
        {BOT_TOKEN}, [Channel(CHANNEL), Channel(LOCKED_CHANNEL, can_send=False)]
    ) as fake:
        yield fake


async def add_bot(
    container: Container, discord: FakeDiscord, *, token: str = BOT_TOKEN, origin: str | None = None
) -> None:
    """The bot's credential, as an admin creates it: the token in an Authorization header,
    allowed only for Discord's origin (here the local one)."""
    await container.credentials.create(
        "discord-bot",
        CredentialType.API_KEY_HEADER,
        {"header": "Authorization", "value": f"Bot {token}"},
        allowed_origins=[origin or discord.origin],
    )


def workflow(config: dict[str, Any], **node: Any) -> dict[str, Any]:
    """A workflow of one ``example.discord`` node called ``post`` (one attempt unless
    ``retry`` says otherwise); with ``catch``, an end node ``fallback`` its routes lead to."""
    post = {"id": "post", "type": "example.discord", "config": config, "retry": {"max_attempts": 1}}
    nodes = [{**post, **node}]
    if "catch" in node:
        nodes.append({"id": "fallback", "type": "end", "config": {"output": "fallback"}})
    return {"name": "discord-test", "start": "post", "nodes": nodes}


async def run(container: Container, definition: dict[str, Any], input: Any = None) -> RunDetail:
    """Save the workflow, start a run, drive it to its end with a worker, return it."""
    record, _, _ = await container.service.save_workflow(definition)
    started, _ = await container.service.start_run(record.id, input or {})
    done = False

    async def watch() -> None:
        nonlocal done
        while not (await container.service.get_run_record(started.id)).status.is_terminal:
            await asyncio.sleep(0.02)
        done = True

    watcher = asyncio.create_task(watch())
    try:
        await container.new_worker().run_until(lambda: done, timeout_s=30)
    finally:
        watcher.cancel()
    return await container.service.get_run(started.id)
