"""A controllable clock for timing tests: pass it as ``clock=`` to ``flowyard.bootstrap.build``.

The clock stands still until a test moves it, so every instant the service and the workers
record (claims, failures, ``retry_at``, leases, run deadlines) is exact and known in advance.
The workers still *poll* on real time (``poll_interval_s``), so a test moves the clock and then
waits, with a bound, for the effect.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: Where a fresh clock starts: a fixed, aware-UTC instant (whole seconds, far from "now").
EPOCH = datetime(2031, 3, 4, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """A callable returning an aware-UTC ``datetime`` that only moves when told to."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self._now = _aware_utc(start)

    def __call__(self) -> datetime:
        return self._now

    @property
    def now(self) -> datetime:
        """The current instant (same as calling the clock)."""
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (never backwards); returns the new instant."""
        if seconds < 0:
            raise ValueError(f"a clock does not go backwards (advance by {seconds})")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (aware; kept in UTC). Going back is allowed: it is explicit."""
        self._now = _aware_utc(when)
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"


def _aware_utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"a naive datetime is ambiguous: {when!r}; give a timezone")
    return when.astimezone(UTC)
