"""Changes other processes should hear of: workflow rows that changed (the read cache's
"latest version" pointers) and draft changes (the streams), decision 0030."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from flowyard.store.ports.events import EventListener


class ChangeFeed(Protocol):
    """Notifications between processes on one database (PostgreSQL ``LISTEN``/``NOTIFY``).
    SQLite cannot notify another process: it listens to nothing and announces nothing."""

    async def listen_for_changes(
        self, on_workflow: Callable[[str], None], on_draft: Callable[[str], None]
    ) -> EventListener | None:
        """Call ``on_workflow(workflow id)`` when a transaction that changed a workflow's row
        commits (any process), and ``on_draft(payload)`` for each announced draft change;
        None when this database cannot notify (SQLite) or the listener cannot connect."""
        ...

    async def announce_draft(self, payload: str) -> bool:
        """Send a draft change (JSON, under 8,000 bytes) to every listening process, this one
        included; False when this database cannot (SQLite: deliver it in-process)."""
        ...
