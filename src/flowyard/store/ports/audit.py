"""The audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from flowyard.domain.auth import (
    AuditEntry,
    AuditRecord,
)


class AuditStore(Protocol):
    """Appending to and reading the audit log."""

    async def append_audit(self, entry: AuditEntry, now: datetime) -> None:
        """Write an audit entry in its own transaction."""
        ...

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
        """Audit entries newest first, before an id cursor."""
        ...
