"""The schema, health and connections: what a process does to start, check and stop its
store, and what operators read (the queue's depth)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class AdminStore(Protocol):
    """Migrations, health, connections and the queue's depth: what operators look at."""

    #: ``sqlite`` or ``postgresql``.
    dialect: str

    async def migrate(self) -> None:
        """Bring the schema to the newest version."""
        ...

    async def schema_is_current(self) -> bool:
        """True when no migration is pending."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    def pool_usage(self) -> list[tuple[str, int, int, float, int]]:
        """(engine, connections in use, pool size, seconds waited for a connection,
        transactions) per sized pool, without a query."""
        ...

    async def due_backlog(self, now: datetime) -> tuple[float | None, int | None]:
        """Age in seconds of the oldest step due and not claimed (None: none is due), and
        the database sessions waiting for a lock now (None: the database cannot tell)."""
        ...

    async def queue_depth(self) -> dict[str, int]:
        """Step counts by status (for metrics and benchmarks)."""
        ...
