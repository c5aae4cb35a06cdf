"""The worker's side of provider quotas: which steps pay a take (a token and/or a slot held
while the step runs), and the adaptive slow-down.

Most steps belong to node types nobody set a quota for. The gate keeps the set of quota
keys for ``refresh_s`` seconds (one small read per worker per period), so such a step pays
a set intersection, not a transaction. A quota set or deleted reaches every worker within
that period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from flowyard.domain.errors import ErrorInfo
from flowyard.domain.quotas import SlotHolder, is_campaign_item_key, rate_limited
from flowyard.domain.records import StepRecord
from flowyard.store.ports import QuotaStore

#: Without a ``Retry-After``, a provider that says "too many" gets this much quiet.
DEFAULT_SLOW_S = 1.0
#: A provider's ``Retry-After`` beyond this is capped (the retry policy caps it too).
MAX_SLOW_S = 300.0


class QuotaGate:
    """Takes quota tokens for steps, and slows the buckets down when a provider refuses."""

    def __init__(
        self,
        store: QuotaStore,
        *,
        clock: Callable[[], datetime],
        refresh_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        self.refresh_s = refresh_s
        self._monotonic = monotonic
        self._keys: frozenset[str] = frozenset()
        self._read_at: float | None = None
        #: The read in progress, which every step that finds the keys stale awaits (one
        #: read per period, not one per concurrent step).
        self._reading: asyncio.Future[frozenset[str]] | None = None

    async def known(self) -> frozenset[str]:
        """The keys that have a quota (cached for ``refresh_s``)."""
        now = self._monotonic()
        if self._read_at is not None and now - self._read_at < self.refresh_s:
            return self._keys
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read(now))
            # A failed read whose every waiter was cancelled is not an unretrieved error.
            self._reading.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(self._reading)

    async def _read(self, now: float) -> frozenset[str]:
        try:
            self._keys = await self.store.quota_keys()
            self._read_at = now
            return self._keys
        finally:
            self._reading = None

    async def limited(self, keys: Sequence[str]) -> list[str]:
        """Those of ``keys`` that have a quota. A campaign's quota per concurrency key is
        made with the run that names it, so it is not looked up (nor cached: a campaign
        may have 50,000 of them)."""
        if not keys:
            return []
        known = await self.known()
        return [k for k in keys if k in known or is_campaign_item_key(k)]

    async def take(self, keys: Sequence[str], step: StepRecord) -> datetime | None:
        """A token and a slot of each of ``keys`` for ``step`` under its current claim
        (None), or when to try again. The slot is freed when the step stops running under
        this claim (its result committed, its run cancelled, its lease lost)."""
        return await self.store.take_quota(
            keys, self.clock(), holder=SlotHolder(step.id, step.claims)
        )

    async def slow_down(self, keys: Sequence[str], error: ErrorInfo | None) -> bool:
        """When ``error`` says the provider refused for its rate, pause ``keys``' buckets
        for its ``Retry-After`` (default 1 s), so every worker backs off, not only the one
        that was told. True when it did."""
        if not keys or error is None or not error.transient:
            return False
        if not rate_limited(error.type, error.details):
            return False
        after = error.details.get("retry_after_s")
        seconds = float(after) if isinstance(after, int | float) and after > 0 else DEFAULT_SLOW_S
        until = self.clock() + timedelta(seconds=min(seconds, MAX_SLOW_S))
        await self.store.slow_quota(keys, until)
        return True
