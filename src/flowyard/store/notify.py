"""Wake-ups when events are committed: PostgreSQL ``LISTEN flowyard_events``.

Migration 0003 adds a statement-level trigger that NOTIFYs the channel on every insert into
``run_events``. A notification carries nothing: listeners re-read ``run_events`` by cursor,
which stays the one source of truth. SQLite has no notifications: streams poll instead.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

#: The channel the trigger of migration 0003 notifies.
EVENTS_CHANNEL = "flowyard_events"

_log = logging.getLogger("flowyard.store.notify")


class EventListener:
    """One dedicated asyncpg connection listening on :data:`EVENTS_CHANNEL`."""

    def __init__(self, connection: Any, callback: Callable[..., None]) -> None:
        self._connection = connection
        self._callback = callback

    def is_alive(self) -> bool:
        """False once the connection was lost (the caller then falls back to polling)."""
        return not bool(self._connection.is_closed())

    async def close(self) -> None:
        """Stop listening and close the connection."""
        try:
            if not self._connection.is_closed():
                await self._connection.remove_listener(EVENTS_CHANNEL, self._callback)
        finally:
            await self._connection.close(timeout=5)


def _asyncpg_dsn(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen_for_events(url: str, wake: Callable[[], None]) -> EventListener | None:
    """Call ``wake()`` whenever events are committed; None when ``url`` is not PostgreSQL
    (poll instead) or the listener cannot connect (logged; poll instead)."""
    if not url.startswith("postgresql"):
        return None
    # asyncpg ships no type information: use it as Any.
    asyncpg: Any = importlib.import_module("asyncpg")

    def callback(*_args: object) -> None:
        wake()

    try:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        _log.warning("cannot LISTEN for events (polling instead): %s", exc)
        return None
    await connection.add_listener(EVENTS_CHANNEL, callback)
    return EventListener(connection, callback)
