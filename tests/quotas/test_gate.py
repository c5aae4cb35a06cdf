"""The worker's quota gate reads the set of quota keys once per period, however many steps
ask for it at the same moment (a drain of 32 concurrent steps once made a read per step)."""

from __future__ import annotations

import asyncio

from flowyard.domain.clock import utc_now
from flowyard.domain.quotas import Quota
from flowyard.store.ports import Store
from flowyard.worker.quotas import QuotaGate


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_steps_share_one_read_of_the_quota_keys(store: Store) -> None:
    await store.put_quota(
        Quota(key="node_type:salesforce", tokens=5, per_s=1.0, burst=5), utc_now()
    )
    reads = 0
    read = store.quota_keys

    async def counted() -> frozenset[str]:
        nonlocal reads
        reads += 1
        return await read()

    store.quota_keys = counted  # type: ignore[method-assign]
    clock = _Clock()
    gate = QuotaGate(store, clock=utc_now, refresh_s=2.0, monotonic=clock)

    answers = await asyncio.gather(*(gate.known() for _ in range(32)))
    assert reads == 1
    assert all(a == frozenset({"node_type:salesforce"}) for a in answers)

    clock.now += 1.0  # within the period: from memory
    await asyncio.gather(*(gate.known() for _ in range(8)))
    assert reads == 1

    clock.now += 1.5  # past it: one more read, shared again
    await asyncio.gather(*(gate.known() for _ in range(8)))
    assert reads == 2


async def test_a_failed_read_is_retried_by_the_next_step(store: Store) -> None:
    calls = 0
    read = store.quota_keys

    async def flaky() -> frozenset[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store down")
        return await read()

    store.quota_keys = flaky  # type: ignore[method-assign]
    gate = QuotaGate(store, clock=utc_now, monotonic=_Clock())
    results = await asyncio.gather(*(gate.known() for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await gate.known() == frozenset()
    assert calls == 2
