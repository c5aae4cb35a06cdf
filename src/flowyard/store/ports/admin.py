"""The schema, health and connections: what a process does to start, check and stop its
store, and what operators read (the queue's depth)."""

from __future__ import annotations

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

    def pool_usage(self) -> list[tuple[str, int, int]]:
        """(engine, connections in use, pool size) per sized pool, without a query."""
        ...

    async def queue_depth(self) -> dict[str, int]:
        """Step counts by status (for metrics and benchmarks)."""
        ...
