"""The store contract, quotas: shared token buckets on SQLite and PostgreSQL (the same
tests, through the ``store`` fixture)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from contract.helpers import T0, at
from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import NotFound
from flowyard.domain.quotas import Quota
from flowyard.store import Store

HTTP = "node_type:http"
CRM = "credential:crm"


async def test_put_get_list_delete(store: Store) -> None:
    audit = AuditEntry("quota.put", actor="alice")
    state = await store.put_quota(Quota(HTTP, 10, 20.0, burst=4), T0, audit=audit)
    assert state.quota == Quota(HTTP, 10, 20.0, burst=4)
    assert (state.bucket.available, state.bucket.updated_at, state.created_at) == (4.0, T0, T0)
    assert audit.written and (audit.target_type, audit.target_id) == ("quota", HTTP)
    await store.put_quota(Quota(CRM, 1, 1.0), T0)

    assert await store.get_quota(HTTP) == state
    assert [s.quota.key for s in await store.list_quotas()] == [CRM, HTTP]
    assert await store.quota_keys() == {CRM, HTTP}

    await store.put_quota(Quota(CRM, 1, 1.0, enabled=False), T0)
    assert await store.quota_keys() == {HTTP}

    await store.delete_quota(CRM, audit=AuditEntry("quota.delete", actor="alice"))
    with pytest.raises(NotFound):
        await store.get_quota(CRM)
    with pytest.raises(NotFound):
        await store.delete_quota(CRM)
    entries = await store.list_audit()
    assert {(e.action, e.target_id) for e in entries} >= {
        ("quota.put", HTTP),
        ("quota.delete", CRM),
    }


async def test_changing_a_quota_keeps_its_bucket_within_the_new_burst(store: Store) -> None:
    await store.put_quota(Quota(HTTP, 10, 10.0, burst=5), T0)
    for _ in range(2):
        assert await store.take_quota([HTTP], T0) is None
    changed = await store.put_quota(Quota(HTTP, 10, 10.0, burst=2), at(0))
    assert changed.bucket.available == 2.0
    assert changed.created_at == T0
    raised = await store.put_quota(Quota(HTTP, 100, 10.0, burst=50), at(0))
    assert raised.bucket.available == 2.0  # a new burst is earned, not granted


async def test_take_grants_the_burst_then_says_when(store: Store) -> None:
    await store.put_quota(Quota(HTTP, 10, 10.0, burst=3), T0)  # refills 8 per 10 s
    for _ in range(3):
        assert await store.take_quota([HTTP], T0) is None
    assert await store.take_quota([HTTP], T0) == at(1.25)
    assert await store.take_quota([HTTP], T0) == at(2.5)  # the next slot, not the same token
    assert await store.take_quota([HTTP], at(1.25)) is None
    state = await store.get_quota(HTTP)
    assert state.bucket.updated_at == at(1.25)
    assert state.available_at(at(1.25)) == pytest.approx(0.0)


async def test_keys_without_a_quota_are_unlimited(store: Store) -> None:
    for _ in range(50):
        assert await store.take_quota(["node_type:noop", "credential:none"], T0) is None
    assert await store.take_quota([], T0) is None


async def test_take_is_all_or_nothing(store: Store) -> None:
    await store.put_quota(Quota(HTTP, 10, 1.0, burst=5), T0)
    await store.put_quota(Quota(CRM, 1, 10.0), T0)
    assert await store.take_quota([HTTP, CRM], T0) is None
    retry_at = await store.take_quota([CRM, HTTP], T0)
    assert retry_at is not None and retry_at >= at(10)
    # The refused take took nothing from the bucket that had room.
    assert (await store.get_quota(HTTP)).bucket.available == 4.0


async def test_slow_quota_pauses_and_empties(store: Store) -> None:
    await store.put_quota(Quota(HTTP, 10, 1.0, burst=5), T0)
    await store.slow_quota([HTTP, "credential:unknown"], at(3))
    state = await store.get_quota(HTTP)
    assert (state.bucket.available, state.bucket.paused_until) == (0.0, at(3))
    # The first token after the pause: the bucket starts empty, 6 tokens a second.
    assert await store.take_quota([HTTP], at(1)) == at(3) + timedelta(microseconds=166667)
    await store.slow_quota([HTTP], at(2))  # shorter: the longer pause stays
    assert (await store.get_quota(HTTP)).bucket.paused_until == at(3)
    assert await store.take_quota([HTTP], at(3.2)) is None  # empty at 3, one token in 1/6 s
    await store.slow_quota([], at(9))


async def test_concurrent_takes_share_one_bucket(store: Store) -> None:
    """Takes racing on every connection the pool has: exactly ``burst`` are granted."""
    await store.put_quota(Quota(HTTP, 50, 10.0, burst=7), T0)
    await store.put_quota(Quota(CRM, 50, 10.0, burst=50), T0)
    results = await asyncio.gather(*(store.take_quota([HTTP, CRM], T0) for _ in range(30)))
    assert sum(r is None for r in results) == 7
    assert (await store.get_quota(CRM)).bucket.available == 43.0
