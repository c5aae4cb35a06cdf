"""Provider quotas: token buckets and concurrency slots shared by every worker (see
:mod:`flowyard.domain.quotas`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.quotas import Quota, QuotaState, SlotHolder


class QuotaStore(Protocol):
    """Quotas and their buckets: managed by admins, taken by workers."""

    async def put_quota(
        self, quota: Quota, now: datetime, *, audit: AuditEntry | None = None
    ) -> QuotaState:
        """Create the quota (its bucket full: ``burst`` tokens) or change its rate, burst
        and switch (the bucket keeps its tokens, at most the new burst, and its pause)."""
        ...

    async def get_quota(self, key: str, *, now: datetime | None = None) -> QuotaState:
        """A quota, its bucket and the slots its running steps hold (given ``now``, only
        those with a live lease) (NotFound)."""
        ...

    async def find_quota(self, key: str, *, now: datetime | None = None) -> QuotaState | None:
        """As :meth:`get_quota`, None when ``key`` has no quota."""
        ...

    async def list_quotas(self, *, now: datetime | None = None) -> list[QuotaState]:
        """Every quota, by key (slots held as in :meth:`get_quota`)."""
        ...

    async def delete_quota(self, key: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a quota: its key is unlimited again (NotFound)."""
        ...

    async def quota_keys(self) -> frozenset[str]:
        """The keys of the enabled quotas (what a worker caches to skip the others)."""
        ...

    async def take_quota(
        self, keys: Sequence[str], now: datetime, *, holder: SlotHolder | None = None
    ) -> datetime | None:
        """One token from each of ``keys``' rates and one slot of each of their concurrency
        limits (held by ``holder`` while its step runs under that claim), all or none, in
        one transaction: None when granted, else the earliest time to try again (nothing
        taken). Keys without a quota are unlimited; without a holder, concurrency limits
        are not applied (nothing could hold the slot)."""
        ...

    async def slow_quota(self, keys: Sequence[str], until: datetime) -> None:
        """A provider said "too many": ``keys``' buckets grant nothing before ``until`` (a
        later pause is kept) and are empty then. Keys without a quota are ignored."""
        ...
