"""Notifications between processes (decisions 0030, 0037): the SQL side of the ``ChangeFeed``
port, for SQLite. ``PostgresStore`` overrides it with ``LISTEN``/``NOTIFY``
(:mod:`flowyard.store.notify`).

SQLite cannot notify another process, and several share one file (``flowyard serve`` and the
CLI, ``flowyard worker``). They tell each other through the ``change_feed`` table instead:

- every transaction that changes a workflow's row appends its id there (``kind``
  "workflow"; ``SqlBase._workflow_changed``), so the row is there when, and only if, the
  change commits; a draft edit, undo or redo appends its event's JSON (``kind`` "draft") in
  its transaction too, other draft changes (open, discard, publish) right after they
  committed, as PostgreSQL NOTIFYs them;
- an API process tails it (:class:`ChangeTail`): every ``poll_s`` its own connection asks
  ``PRAGMA data_version``, which moves only when another connection committed something, and
  when it moved reads the rows after its cursor, skipping its own (delivered in-process at
  once). An idle database costs one pragma (one thread hop) per poll;
- writers trim it to the newest :data:`FEED_KEEP` rows. ``seq`` has no gaps below the
  newest row (SQLite serialises writers; AUTOINCREMENT never reuses a number), so a tail that
  finds one missed trimmed rows: it stops, and the hub forgets everything and starts again.

An in-memory database is one process's: nothing is written or tailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.store.base import SqlBase
from flowyard.store.ports.events import EventListener
from flowyard.store.schema import change_feed

#: Rows the writers keep; a tail that falls further behind starts again.
FEED_KEEP = 2_000
#: A writer trims when it appends a row whose ``seq`` is a multiple of this.
TRIM_EVERY = 100
#: How often a tail looks for changes (a CLI edit reaches serve's streams within this).
POLL_S = 0.2
#: How long a poll waits for a lock (as the store's own SQLite connections do).
_BUSY_TIMEOUT_S = 30.0
#: Rows read per query while catching up.
_BATCH = 500
#: The rows after a cursor, oldest first.
_AFTER = (
    f"SELECT seq, kind, payload, origin FROM {change_feed.name} WHERE seq > ? ORDER BY seq LIMIT ?"
)

_log = logging.getLogger("flowyard.store.changes")

WORKFLOW = "workflow"
DRAFT = "draft"


class ChangeOps(SqlBase):
    """The change feed on SQLite (PostgreSQL overrides every method)."""

    #: How often :meth:`listen_for_changes`'s tail polls.
    change_poll_s = POLL_S

    @functools.cached_property
    def change_origin(self) -> str:
        """This store's mark on the rows it appends (its own tail skips them)."""
        return secrets.token_hex(8)

    @functools.cached_property
    def shares_changes(self) -> bool:
        """True when other processes may open the database (False in memory)."""
        return sa.make_url(self.url).database not in (None, "", ":memory:")

    @property
    def records_draft_notices(self) -> bool:
        """A draft edit's notice goes in its transaction (one write fewer per edit)."""
        return self.shares_changes

    async def _workflow_changed(self, conn: AsyncConnection, workflow_id: str) -> None:
        await self._append_change(conn, WORKFLOW, workflow_id)

    async def _draft_changed(self, conn: AsyncConnection, payload: str) -> None:
        await self._append_change(conn, DRAFT, payload)

    async def _append_change(self, conn: AsyncConnection, kind: str, payload: str) -> None:
        if not self.shares_changes:
            return
        inserted = await conn.execute(
            change_feed.insert().values(kind=kind, payload=payload, origin=self.change_origin)
        )
        seq = inserted.inserted_primary_key[0] if inserted.inserted_primary_key else None
        if isinstance(seq, int) and seq % TRIM_EVERY == 0:
            await conn.execute(change_feed.delete().where(change_feed.c.seq <= seq - FEED_KEEP))

    async def listen_for_changes(
        self, on_workflow: Callable[[str], None], on_draft: Callable[[str], None]
    ) -> EventListener | None:
        """Tail the change feed (None for an in-memory database)."""
        if not self.shares_changes:
            return None
        path = str(sa.make_url(self.url).database)
        tail = ChangeTail(
            path, self.change_origin, on_workflow, on_draft, poll_s=self.change_poll_s
        )
        await tail.start()
        return tail

    async def announce_draft(self, payload: str) -> bool:
        """Append the draft change for the other processes' tails; False: this process
        delivers it to its own streams."""
        if self.shares_changes:

            async def fn(conn: AsyncConnection) -> None:
                await self._append_change(conn, DRAFT, payload)

            await self._tx(fn)
        return False


class ChangeTail:
    """One API process reading the change feed on a connection of its own (``PRAGMA
    data_version`` is per connection): a plain ``sqlite3`` connection in autocommit mode,
    used one call at a time off the event loop, so a poll is one thread hop and never holds
    a read transaction (WAL could not checkpoint past one)."""

    def __init__(
        self,
        path: str,
        origin: str,
        on_workflow: Callable[[str], None],
        on_draft: Callable[[str], None],
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self._path = path
        self._origin = origin
        self._handlers = {WORKFLOW: on_workflow, DRAFT: on_draft}
        self.poll_s = poll_s
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._version: object = None
        self.cursor = 0

    def _open(self) -> tuple[sqlite3.Connection, object, int]:
        conn = sqlite3.connect(
            self._path,
            timeout=_BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            newest = conn.execute(f"SELECT max(seq) FROM {change_feed.name}").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        return conn, version, int(newest or 0)

    async def start(self) -> None:
        """Open the connection and start from the newest row (what came before is not
        replayed: the hub forgets everything when a listener starts)."""
        conn, self._version, self.cursor = await asyncio.to_thread(self._open)
        self._conn = conn
        self._task = asyncio.create_task(self._run(conn), name="flowyard-change-tail")

    async def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                await asyncio.sleep(self.poll_s)
                version, rows = await asyncio.to_thread(self._poll, conn, self._version)
                self._version = version
                for seq, kind, payload, origin in rows:
                    if seq != self.cursor + 1:
                        _log.warning("the change feed was trimmed past this process")
                        return
                    self.cursor = seq
                    handler = self._handlers.get(kind)
                    if handler is not None and origin != self._origin:
                        try:
                            handler(payload)
                        except Exception:
                            _log.exception("a change feed handler failed")
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.warning("lost the change feed tail; the hub starts it again", exc_info=True)

    def _poll(self, conn: sqlite3.Connection, seen: object) -> tuple[object, list[Any]]:
        """(data_version, the rows after the cursor when it moved). In a thread."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == seen:
            return version, []
        rows: list[Any] = []
        cursor = self.cursor
        while True:
            batch = conn.execute(_AFTER, (cursor, _BATCH)).fetchall()
            rows += batch
            if len(batch) < _BATCH:
                return version, rows
            cursor = batch[-1][0]

    def is_alive(self) -> bool:
        """False once the tail stopped (an error, or rows trimmed unread)."""
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        """Stop tailing and release the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(conn.close)
