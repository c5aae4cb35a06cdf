"""Notifications between processes: PostgreSQL ``LISTEN``/``NOTIFY``.

- ``flowyard_events``: migration 0003 adds a statement-level trigger that NOTIFYs it on every
  insert into ``run_events``. A notification carries nothing: listeners re-read
  ``run_events`` by cursor, which stays the one source of truth.
- ``flowyard_workflows``: the store NOTIFYs it, with the workflow's id, in every transaction
  that changes a ``workflows`` row (create, new version, archive, publish); the read cache
  of each API process forgets its "latest version" pointers (decision 0030). NOTIFY is
  transactional: it is delivered when, and only if, the change commits.
- ``flowyard_drafts``: a draft's change (open, edit, undo, redo, discard, publish) as a small
  JSON document, sent after the change committed; each API process hands it to its streams.

SQLite has no notifications: streams poll for run events, the read cache re-reads the
workflow's row, and draft changes reach the streams of the process that made them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

#: The channel the trigger of migration 0003 notifies.
EVENTS_CHANNEL = "flowyard_events"
#: Workflow rows that changed (payload: the workflow's id).
WORKFLOWS_CHANNEL = "flowyard_workflows"
#: Draft changes (payload: the change as JSON).
DRAFTS_CHANNEL = "flowyard_drafts"
#: NOTIFY refuses payloads of 8,000 bytes or more.
MAX_PAYLOAD_BYTES = 7_900

_log = logging.getLogger("flowyard.store.notify")


class EventListener:
    """One dedicated asyncpg connection listening on one or more channels."""

    def __init__(self, connection: Any, callbacks: Mapping[str, Callable[..., None]]) -> None:
        self._connection = connection
        self._callbacks = dict(callbacks)

    def is_alive(self) -> bool:
        """False once the connection was lost (the caller then falls back to polling)."""
        return not bool(self._connection.is_closed())

    async def close(self) -> None:
        """Stop listening and close the connection."""
        try:
            if not self._connection.is_closed():
                for channel, callback in self._callbacks.items():
                    await self._connection.remove_listener(channel, callback)
        finally:
            await self._connection.close(timeout=5)


def _asyncpg_dsn(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen_for_events(url: str, wake: Callable[[], None]) -> EventListener | None:
    """Call ``wake()`` whenever events are committed; None when ``url`` is not PostgreSQL
    (poll instead) or the listener cannot connect (logged; poll instead)."""
    return await listen(
        url, {EVENTS_CHANNEL: lambda _payload: wake()}, what="events (polling instead)"
    )


async def listen(
    url: str, handlers: Mapping[str, Callable[[str], None]], *, what: str
) -> EventListener | None:
    """Call ``handlers[channel](payload)`` for each notification on those channels, on one
    connection of its own; None when ``url`` is not PostgreSQL or the listener cannot connect
    (logged, with ``what`` it was for)."""
    if not url.startswith("postgresql"):
        return None
    # asyncpg ships no type information: use it as Any.
    asyncpg: Any = importlib.import_module("asyncpg")

    def bind(handler: Callable[[str], None]) -> Callable[..., None]:
        def callback(_connection: object, _pid: object, _channel: object, payload: str) -> None:
            handler(payload)

        return callback

    try:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        _log.warning("cannot LISTEN for %s: %s", what, exc)
        return None
    callbacks = {channel: bind(handler) for channel, handler in handlers.items()}
    try:
        for channel, callback in callbacks.items():
            await connection.add_listener(channel, callback)
    except BaseException:
        await connection.close(timeout=5)
        raise
    return EventListener(connection, callbacks)
