"""Provider quotas: admins set, read and delete them (API and CLI), by key or on the
credential they limit; workers take their tokens and slots through the store
(``worker/quotas.py``). The quotas table is the one source of truth: a credential's quota is
the quota keyed ``credential:<name>``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import InvalidInput, Problem
from flowyard.domain.quotas import Quota, QuotaState, check_key, credential_key, parse_rate
from flowyard.store.ports import CredentialStore, QuotaStore


def _key(key: str, pointer: str = "/key") -> str:
    try:
        return check_key(key)
    except ValueError as exc:
        raise InvalidInput(str(exc), [Problem(pointer, str(exc), "quota_key")]) from None


def _quota(
    key: str, rate: str | None, burst: int | None, concurrency: int | None, enabled: bool
) -> Quota:
    """The quota asked for; InvalidInput with the pointer of what is wrong."""
    if rate is None and concurrency is None:
        message = "a quota needs a rate, a concurrency limit, or both"
        raise InvalidInput(message, [Problem("/rate", message, "quota_empty")])
    tokens: int | None = None
    per_s: float | None = None
    if rate is not None:
        try:
            tokens, per_s = parse_rate(rate)
        except ValueError as exc:
            raise InvalidInput(str(exc), [Problem("/rate", str(exc), "rate")]) from None
    try:
        return Quota(key, tokens, per_s, 1 if burst is None else burst, enabled, concurrency)
    except ValueError as exc:
        pointer = "/concurrency" if "concurrency" in str(exc) else "/burst"
        raise InvalidInput(str(exc), [Problem(pointer, str(exc), pointer[1:])]) from None


class QuotaService:
    """Quotas by key (``credential:<name>``, ``node_type:<type>``) and by credential."""

    def __init__(
        self,
        store: QuotaStore,
        *,
        clock: Callable[[], datetime],
        credentials: CredentialStore | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        #: Where a credential's existence is checked (None: credential quotas by key only).
        self.credentials = credentials

    async def put(
        self,
        key: str,
        rate: str | None,
        *,
        burst: int | None = None,
        concurrency: int | None = None,
        enabled: bool = True,
        audit: AuditEntry | None = None,
    ) -> QuotaState:
        """Set the quota of ``key``: ``rate`` (``"100 per 20s"``; ``burst``, default 1:
        evenly spaced, is how many may start at once) and/or ``concurrency`` (how many may
        be in flight at once). InvalidInput (with pointers) for a bad key, rate, burst or
        limit, or for neither a rate nor a limit."""
        quota = _quota(_key(key), rate, burst, concurrency, enabled)
        if audit is not None:
            detail = {"rate": quota.rate, "burst": quota.burst, "concurrency": quota.concurrency}
            audit.detail = {**(audit.detail or {}), **detail}
        return await self.store.put_quota(quota, self.clock(), audit=audit)

    async def get(self, key: str) -> QuotaState:
        """A quota, its bucket and the slots held now (NotFound)."""
        return await self.store.get_quota(_key(key), now=self.clock())

    async def find(self, key: str) -> QuotaState | None:
        """A quota, its bucket and the slots held now; None when ``key`` has none."""
        return await self.store.find_quota(_key(key), now=self.clock())

    async def list(self) -> list[QuotaState]:
        """Every quota, by key."""
        return await self.store.list_quotas(now=self.clock())

    async def delete(self, key: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a quota: its steps are no longer paced (NotFound)."""
        await self.store.delete_quota(_key(key), audit=audit)

    # -- on the credential ---------------------------------------------------------------

    async def credential_key(self, name: str) -> str:
        """The quota key of the credential called ``name`` (or with that id): NotFound
        when there is no such credential."""
        if self.credentials is None:
            return _key(credential_key(name))
        stored = await self.credentials.get_credential(name)
        return credential_key(stored.record.name)

    async def put_for_credential(
        self,
        name: str,
        rate: str | None,
        *,
        burst: int | None = None,
        concurrency: int | None = None,
        enabled: bool = True,
        audit: AuditEntry | None = None,
    ) -> QuotaState:
        """Set the quota of the credential ``name`` (NotFound; as :meth:`put`)."""
        key = await self.credential_key(name)
        return await self.put(
            key, rate, burst=burst, concurrency=concurrency, enabled=enabled, audit=audit
        )

    async def find_for_credential(self, name: str) -> QuotaState | None:
        """The quota of the credential ``name`` (None when it has none; NotFound when the
        credential does not exist)."""
        return await self.find(await self.credential_key(name))

    async def delete_for_credential(self, name: str, *, audit: AuditEntry | None = None) -> None:
        """Delete the quota of the credential ``name`` (NotFound: no credential, or no
        quota)."""
        await self.delete(await self.credential_key(name), audit=audit)
