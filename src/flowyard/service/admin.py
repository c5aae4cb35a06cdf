"""Operations and oversight: readiness, the queue's depth and the audit log, for the health
and metrics routes, the audit route and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from flowyard.domain.auth import AuditEntry, AuditRecord
from flowyard.domain.errors import StoreUnavailable
from flowyard.observability import QueueHealth
from flowyard.store.ports import AdminStore, AuditStore


class AdminServiceStore(AdminStore, AuditStore, Protocol):
    """The ports the admin use cases work over: health and the audit log."""


class AdminService:
    """What operators read, and the audit log's own writes."""

    def __init__(self, store: AdminServiceStore, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    @property
    def dialect(self) -> str:
        """The database behind the store: ``sqlite`` or ``postgresql``."""
        return self.store.dialect

    async def not_ready(self) -> str | None:
        """Why this process cannot serve now (the database does not answer, or migrations
        are pending); None when it can."""
        try:
            await self.store.ping()
            current = await self.store.schema_is_current()
        except StoreUnavailable as exc:
            return str(exc)
        return None if current else "database migrations are pending"

    async def queue_depth(self) -> dict[str, int]:
        """Step counts by status."""
        return await self.store.queue_depth()

    async def queue_health(self) -> QueueHealth:
        """Step counts by status, the oldest due step's age and lock waits (metrics)."""
        depth = await self.store.queue_depth()
        oldest_due_s, lock_waits = await self.store.due_backlog(self.clock())
        return QueueHealth(depth, oldest_due_s, lock_waits)

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Audit entries newest first, before an id cursor (``target``: an id, or
        ``type:id``)."""
        return await self.store.list_audit(
            actor=actor, action=action, target=target, since=since, before=before, limit=limit
        )

    async def append_audit(self, entry: AuditEntry) -> None:
        """Write an entry on its own: a request refused, or one that changed nothing."""
        await self.store.append_audit(entry, self.clock())
