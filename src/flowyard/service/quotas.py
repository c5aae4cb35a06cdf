"""Provider quotas: admins set, read and delete them (API and CLI); workers take their
tokens through the store (``worker/quotas.py``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import InvalidInput, Problem
from flowyard.domain.quotas import Quota, QuotaState, check_key, parse_rate
from flowyard.store.ports import QuotaStore


def _key(key: str, pointer: str = "/key") -> str:
    try:
        return check_key(key)
    except ValueError as exc:
        raise InvalidInput(str(exc), [Problem(pointer, str(exc), "quota_key")]) from None


class QuotaService:
    """Quotas by key (``credential:<name>``, ``node_type:<type>``)."""

    def __init__(self, store: QuotaStore, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    async def put(
        self,
        key: str,
        rate: str,
        *,
        burst: int | None = None,
        enabled: bool = True,
        audit: AuditEntry | None = None,
    ) -> QuotaState:
        """Set the quota of ``key`` to ``rate`` (``"100 per 20s"``); ``burst`` (default 1:
        evenly spaced) is how many may start at once. InvalidInput (with pointers) for a bad
        key, rate or burst."""
        key = _key(key)
        try:
            tokens, per_s = parse_rate(rate)
        except ValueError as exc:
            raise InvalidInput(str(exc), [Problem("/rate", str(exc), "rate")]) from None
        try:
            quota = Quota(key, tokens, per_s, 1 if burst is None else burst, enabled)
        except ValueError as exc:
            raise InvalidInput(str(exc), [Problem("/burst", str(exc), "burst")]) from None
        if audit is not None:
            audit.detail = {**(audit.detail or {}), "rate": quota.rate, "burst": quota.burst}
        return await self.store.put_quota(quota, self.clock(), audit=audit)

    async def get(self, key: str) -> QuotaState:
        """A quota and its bucket (NotFound)."""
        return await self.store.get_quota(_key(key))

    async def list(self) -> list[QuotaState]:
        """Every quota, by key."""
        return await self.store.list_quotas()

    async def delete(self, key: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a quota: its steps are no longer paced (NotFound)."""
        await self.store.delete_quota(_key(key), audit=audit)
