"""Changes other processes should hear of: workflow rows that changed (the read cache's
"latest version" pointers) and draft changes (the streams), decisions 0030 and 0037."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from flowyard.store.ports.events import EventListener


class ChangeFeed(Protocol):
    """Notifications between processes on one database: PostgreSQL ``LISTEN``/``NOTIFY``;
    on a SQLite file the ``change_feed`` table, tailed every ~200 ms."""

    @property
    def shares_changes(self) -> bool:
        """False when no other process can open the database (SQLite in memory)."""
        ...

    async def listen_for_changes(
        self, on_workflow: Callable[[str], None], on_draft: Callable[[str], None]
    ) -> EventListener | None:
        """Call ``on_workflow(workflow id)`` when a transaction that changed a workflow's row
        commits (any process), and ``on_draft(payload)`` for each announced draft change;
        None when no other process shares the database or the listener cannot connect."""
        ...

    @property
    def records_draft_notices(self) -> bool:
        """True when a draft edit's ``notice`` is written in the edit's own transaction (a
        SQLite file); False: the caller announces the change after it committed."""
        ...

    async def announce_draft(self, payload: str) -> bool:
        """Send a draft change (JSON, under 8,000 bytes) to every listening process; True
        when this one hears it that way too, False when the caller delivers it in-process
        (SQLite: the other processes read it from the change feed)."""
        ...
