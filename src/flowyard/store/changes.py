"""Notifications between processes (decision 0030): the SQL side of the ``ChangeFeed`` port.

The base (SQLite) cannot notify another process; ``PostgresStore`` overrides these with
``LISTEN``/``NOTIFY`` (:mod:`flowyard.store.notify`). The write operations call
``SqlBase._workflow_changed`` inside the transaction that changes a workflow's row, so the
notification is sent when, and only if, the change commits.
"""

from __future__ import annotations

from collections.abc import Callable

from flowyard.store.base import SqlBase
from flowyard.store.ports.events import EventListener


class ChangeOps(SqlBase):
    """No notifications (SQLite)."""

    async def listen_for_changes(
        self, on_workflow: Callable[[str], None], on_draft: Callable[[str], None]
    ) -> EventListener | None:
        """SQLite cannot notify another process (None)."""
        return None

    async def announce_draft(self, payload: str) -> bool:
        """SQLite cannot notify another process (False: deliver in-process)."""
        return False
