"""The one wall clock: timezone-aware UTC. Components take a ``clock`` callable (tests move
it instead of sleeping); this is the default they are given."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)
