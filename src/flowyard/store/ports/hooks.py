"""Webhook triggers: hooks (resources) and the delivery ids they remember."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.hooks import HookChange, HookRecord, NewHook


class HookStore(Protocol):
    """Hooks managed by editors (audited writes) and read by the public intake."""

    async def create_hook(
        self, new: NewHook, now: datetime, *, audit: AuditEntry | None = None
    ) -> HookRecord:
        """Store a new hook with a fresh unguessable id (Conflict: name or path taken)."""
        ...

    async def get_hook(self, ref: str) -> HookRecord:
        """A hook by id or name (NotFound)."""
        ...

    async def get_hook_by_path(self, path: str) -> HookRecord:
        """The hook with this readable path (NotFound)."""
        ...

    async def list_hooks(
        self, *, workflow_id: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[HookRecord]:
        """Hooks by name, after a name cursor, optionally of one workflow."""
        ...

    async def update_hook(
        self, ref: str, change: HookChange, now: datetime, *, audit: AuditEntry | None = None
    ) -> HookRecord:
        """Enable, disable, move or reconfigure a hook (NotFound; Conflict: path taken)."""
        ...

    async def delete_hook(self, ref: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a hook and the delivery ids it remembers (NotFound)."""
        ...

    async def delivery_window(
        self, hook_id: str, delivery_key: str, now: datetime
    ) -> datetime | None:
        """When the window of a remembered delivery id began (None: not remembered, or its
        window has passed)."""
        ...

    async def note_delivery(
        self, hook_id: str, delivery_key: str, now: datetime, window_s: int
    ) -> datetime:
        """Remember a delivery id for ``window_s`` from its first delivery; returns when its
        window began (the same for every repeat within it, ``now`` for a new window)."""
        ...
