"""Concurrency limits, the pure part: quotas with and without a rate, a slot or a queue
slot for a step, the hold-time average, and all-or-nothing over a rate and a limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowyard.domain.quotas import (
    MAX_HOLD_S,
    MIN_HOLD_S,
    Bucket,
    Quota,
    Slots,
    admit,
    decide,
    full,
    observe_hold,
)

T0 = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
KEY = "credential:crm"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_quota_has_a_rate_a_limit_or_both() -> None:
    limit = Quota(KEY, None, None, concurrency=3)
    assert (limit.has_rate, limit.rate, limit.refill_per_s) == (False, None, 0.0)
    assert Quota(KEY, 10, 1.0, concurrency=3).rate == "10 per 1s"
    with pytest.raises(ValueError, match="a rate, a concurrency limit, or both"):
        Quota(KEY, None, None)
    with pytest.raises(ValueError, match="count and its window"):
        Quota(KEY, 10, None, concurrency=3)
    with pytest.raises(ValueError, match="concurrency must be"):
        Quota(KEY, None, None, concurrency=0)
    with pytest.raises(ValueError, match="concurrency must be"):
        Quota(KEY, 5, 1.0, concurrency=True)
    with pytest.raises(ValueError, match="burst applies to a rate"):
        Quota(KEY, None, None, burst=2, concurrency=3)


def test_slots_are_granted_up_to_the_limit_then_queue_slots_follow_the_hold_time() -> None:
    quota = Quota(KEY, None, None, concurrency=2)
    slots, retry = admit(Slots(0, hold_s=1.0), quota, T0)
    assert (slots.in_flight, retry) == (1, None)
    slots, retry = admit(slots, quota, T0)
    assert (slots.in_flight, retry) == (2, None)
    # Full: one hold time per slot apart (1 s / 2 slots), each refused step a later one.
    slots, first = admit(slots, quota, T0)
    assert (slots.in_flight, first) == (2, at(0.5))
    slots, second = admit(slots, quota, T0)
    assert second == at(1.0)
    assert slots.queue_until == at(1.5)


def test_a_grant_that_leaves_slots_free_voids_the_queue() -> None:
    quota = Quota(KEY, None, None, concurrency=3)
    queued = Slots(1, hold_s=1.0, queue_until=at(30))
    slots, retry = admit(queued, quota, at(1))
    assert retry is None and slots.queue_until is None
    # The last free slot keeps the queue: the steps in it still wait for the next one.
    slots, retry = admit(Slots(2, 1.0, at(30)), quota, at(1))
    assert retry is None and slots.queue_until == at(30)


def test_a_disabled_limit_or_a_rate_alone_grants_without_counting() -> None:
    off = Quota(KEY, None, None, enabled=False, concurrency=1)
    assert admit(Slots(5), off, T0) == (Slots(5), None)
    rate_only = Quota(KEY, 5, 1.0)
    assert admit(Slots(5), rate_only, T0) == (Slots(5), None)


def test_the_hold_time_is_a_clamped_moving_average() -> None:
    assert observe_hold(1.0, []) == 1.0
    assert observe_hold(1.0, [2.0]) == pytest.approx(1.2)
    assert observe_hold(1.0, [0.0] * 200) == pytest.approx(MIN_HOLD_S)
    assert observe_hold(1.0, [1e9] * 200) == pytest.approx(MAX_HOLD_S)


def test_decide_takes_nothing_when_the_slot_is_refused() -> None:
    quota = Quota(KEY, 10, 1.0, burst=5, concurrency=1)
    bucket = full(quota, T0)
    granted = decide({KEY: (quota, bucket, Slots(0))}, T0)
    assert granted.granted and granted.buckets[KEY].available == pytest.approx(4.0)
    assert granted.slots[KEY].in_flight == 1
    refused = decide({KEY: (quota, bucket, Slots(1, hold_s=2.0))}, T0)
    assert not refused.granted and refused.retry_at == at(2.0)
    assert refused.buckets == {}  # the token was not taken
    assert refused.slots[KEY].queue_until == at(4.0)


def test_decide_waits_for_the_latest_of_a_token_and_a_slot() -> None:
    tight = Quota("credential:a", 1, 10.0)
    limited = Quota("credential:b", None, None, concurrency=1)
    empty = Bucket(0.0, T0)
    decision = decide(
        {
            "credential:a": (tight, empty, Slots()),
            "credential:b": (limited, full(limited, T0), Slots(1, hold_s=0.5)),
        },
        T0,
    )
    assert decision.retry_at == at(10.0)
    assert set(decision.buckets) == {"credential:a"} and set(decision.slots) == {"credential:b"}
