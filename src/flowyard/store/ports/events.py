"""The notifier: run events read by id cursor, the event horizon, and wake-ups when events
are committed (what live streams need)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from flowyard.domain.ids import RunId, WorkflowId
from flowyard.domain.records import (
    EventRecord,
)
from flowyard.domain.statuses import RunStatus


class EventListener(Protocol):
    """A live subscription to event commits (one dedicated connection)."""

    def is_alive(self) -> bool:
        """False once the subscription was lost (the caller then falls back to polling)."""
        ...

    async def close(self) -> None:
        """Stop listening and release the connection."""
        ...


class EventFeed(Protocol):
    """Run events for live streams: read by id cursor up to the event horizon, with wake-ups
    when events are committed. A wake-up carries nothing: readers look again."""

    async def listen_for_events(self, wake: Callable[[], None]) -> EventListener | None:
        """Call ``wake()`` whenever events are committed, until the listener is closed; None
        when this database cannot notify (SQLite) or the listener cannot connect: poll."""
        ...

    async def read_events(
        self,
        *,
        after: int,
        upto: int,
        run_id: RunId | None = None,
        workflow_id: WorkflowId | None = None,
        status: RunStatus | None = None,
        limit: int = 500,
    ) -> list[EventRecord]:
        """Events with ``after < id <= upto`` in id order, filtered by run, by workflow and by
        the run's current status."""
        ...

    async def event_horizon(self) -> int | None:
        """The highest event id H such that every event with an id <= H is committed or will
        never be (ids can commit out of order on PostgreSQL); None when it cannot be known
        now (an event-writing transaction is still open). Streams deliver only up to H."""
        ...
