"""The store contract, concurrency limits: slots held by running steps, freed by whatever
ends their claim (completion, cancel, an expired lease, a later claim), shared by racing
takes; on SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import asyncio

import pytest

from contract.helpers import LEASE_S, T0, at, claim, complete, make_workflow, start, succeeded
from flowyard.domain.quotas import Quota, SlotHolder
from flowyard.domain.records import StepRecord
from flowyard.store import Store

CRM = "credential:crm"


def holder(step: StepRecord) -> SlotHolder:
    return SlotHolder(step.id, step.claims)


async def running(store: Store, count: int) -> list[StepRecord]:
    """``count`` claimed steps (each its own run), leases until ``at(LEASE_S)``."""
    await start(store, await make_workflow(store), count)
    steps = await claim(store, limit=count)
    assert len(steps) == count
    return steps


async def test_a_limit_grants_its_slots_then_spaces_the_refused_steps(store: Store) -> None:
    await store.put_quota(Quota(CRM, None, None, concurrency=2), T0)
    one, two, three, four = await running(store, 4)
    assert await store.take_quota([CRM], T0, holder=holder(one)) is None
    assert await store.take_quota([CRM], T0, holder=holder(two)) is None
    # The default hold time (1 s) over 2 slots: queue slots half a second apart.
    assert await store.take_quota([CRM], T0, holder=holder(three)) == at(0.5)
    assert await store.take_quota([CRM], T0, holder=holder(four)) == at(1.0)
    state = await store.get_quota(CRM, now=T0)
    assert (state.quota.concurrency, state.quota.rate, state.slots.in_flight) == (2, None, 2)
    assert [s.slots.in_flight for s in await store.list_quotas(now=T0)] == [2]

    # A completion frees its slot; its hold time (3 s) moves the average.
    assert await complete(store, one, succeeded(), at(3))
    assert await store.take_quota([CRM], at(3), holder=holder(three)) is None
    state = await store.get_quota(CRM, now=at(3))
    assert state.slots.in_flight == 2
    assert state.slots.hold_s == pytest.approx(1.4)
    assert await store.take_quota([CRM], at(3), holder=holder(four)) == at(3.7)


async def test_a_cancelled_run_frees_its_slot(store: Store) -> None:
    await store.put_quota(Quota(CRM, None, None, concurrency=1), T0)
    one, two = await running(store, 2)
    assert await store.take_quota([CRM], T0, holder=holder(one)) is None
    assert await store.take_quota([CRM], T0, holder=holder(two)) is not None
    await store.cancel_run(one.run_id, actor="alice", reason="test", now=at(1))
    assert await store.take_quota([CRM], at(1), holder=holder(two)) is None


async def test_a_dead_workers_slot_is_freed_when_its_lease_lapses(store: Store) -> None:
    """The worker holding the slot was killed: nothing releases it, its lease lapses."""
    await store.put_quota(Quota(CRM, None, None, concurrency=1), T0)
    await start(store, await make_workflow(store), 2)
    [one] = await claim(store, limit=1)  # leased until LEASE_S
    [two] = await claim(store, limit=1, now=at(20))  # leased until 20 + LEASE_S
    assert await store.take_quota([CRM], T0, holder=holder(one)) is None
    assert await store.take_quota([CRM], at(20), holder=holder(two)) is not None
    assert (await store.get_quota(CRM, now=at(LEASE_S + 1))).slots.in_flight == 0
    assert await store.take_quota([CRM], at(LEASE_S + 1), holder=holder(two)) is None

    # Recovered and claimed again, the step needs a slot under its new claim: the old one
    # does not count for it.
    recovered, _ = await store.recover_expired(
        "w2", now=at(LEASE_S + 1), max_recoveries=3, lease_s=LEASE_S
    )
    assert recovered == 1
    [again] = await claim(store, now=at(LEASE_S + 2))
    assert (again.id, again.claims) == (one.id, one.claims + 1)
    assert await store.take_quota([CRM], at(LEASE_S + 2), holder=holder(again)) is not None
    assert await complete(store, two, succeeded(), at(LEASE_S + 3))
    assert await store.take_quota([CRM], at(LEASE_S + 3), holder=holder(again)) is None
    assert (await store.get_quota(CRM, now=at(LEASE_S + 3))).slots.in_flight == 1


async def test_without_a_holder_only_rates_apply_and_delete_drops_the_slots(
    store: Store,
) -> None:
    await store.put_quota(Quota(CRM, 100, 1.0, burst=10, concurrency=1), T0)
    [one] = await running(store, 1)
    assert await store.take_quota([CRM], T0, holder=holder(one)) is None
    assert await store.take_quota([CRM], T0) is None  # no step to hold a slot
    assert (await store.get_quota(CRM, now=T0)).bucket.available == pytest.approx(8.0)
    await store.delete_quota(CRM)
    await store.put_quota(Quota(CRM, None, None, concurrency=1), T0)
    assert (await store.get_quota(CRM, now=T0)).slots.in_flight == 0
    assert await store.find_quota("credential:none") is None


async def test_racing_takes_never_exceed_the_limit(store: Store) -> None:
    """Takes racing on every connection the pool has: exactly ``concurrency`` slots."""
    await store.put_quota(Quota(CRM, None, None, concurrency=3), T0)
    steps = await running(store, 20)
    results = await asyncio.gather(*(store.take_quota([CRM], T0, holder=holder(s)) for s in steps))
    assert sum(r is None for r in results) == 3
    assert (await store.get_quota(CRM, now=T0)).slots.in_flight == 3
