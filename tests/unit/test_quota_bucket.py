"""Quotas without a database: keys, rates, and the bucket's promise that no window of
``per_s`` seconds grants more than ``tokens``."""

from __future__ import annotations

from bisect import bisect_left
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyard.domain.commands import StepCompletion
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, StepId
from flowyard.domain.quotas import (
    QUEUE_GRACE_S,
    Bucket,
    Quota,
    check_key,
    full,
    parse_rate,
    rate_limited,
    refill,
    slowed,
    take,
    take_all,
)
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.engine.settlement import RunFacts, Settlement, deferred

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100 per 20s", (100, 20.0)),
        ("5/s", (5, 1.0)),
        ("300 per minute", (300, 60.0)),
        ("300 per minutes", (300, 60.0)),
        ("10 per 1h30m", (10, 5400.0)),
        ("1 per hour", (1, 3600.0)),
        (" 7 / 250ms ", (7, 0.25)),
        ("2 PER 1 s", (2, 1.0)),
    ],
)
def test_rates_people_write(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text", ["", "100", "per 20s", "0 per 1s", "5 per 0s", "5 per soon", "-1/s", "5 per 30d"]
)
def test_bad_rates_say_why(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_keys() -> None:
    assert check_key("credential:salesforce") == "credential:salesforce"
    assert check_key("node_type:http") == "node_type:http"
    for bad in ("salesforce", "credential:", "user:x", "credential:Bad", "node_type:a b"):
        with pytest.raises(ValueError):
            check_key(bad)


def test_burst_is_bounded_by_the_rate() -> None:
    with pytest.raises(ValueError):
        Quota("node_type:http", 5, 1.0, burst=6)
    with pytest.raises(ValueError):
        Quota("node_type:http", 5, 1.0, burst=0)
    assert Quota("node_type:http", 5, 1.0, burst=5).refill_per_s == pytest.approx(1.0)
    assert Quota("node_type:http", 5, 1.0).refill_per_s == pytest.approx(5.0)


def test_take_grants_until_empty_then_says_when() -> None:
    quota = Quota("node_type:http", 10, 10.0, burst=3)  # refills 8 per 10 s
    bucket = full(quota, T0)
    for _ in range(3):
        result = take(bucket, quota, T0)
        assert result.granted
        bucket = result.bucket
    refused = take(bucket, quota, T0)
    assert not refused.granted and refused.retry_at == at(1.25)
    # Nothing taken; only the queue of slots moved.
    assert refused.bucket == Bucket(bucket.available, bucket.updated_at, None, at(2.5))
    assert take(bucket, quota, at(1.25)).granted


def test_a_clock_that_goes_back_adds_nothing() -> None:
    quota = Quota("node_type:http", 10, 1.0)
    bucket = Bucket(0.0, at(5))
    assert refill(bucket, quota, at(1)).available == 0.0


def test_a_pause_refuses_until_it_ends_and_starts_empty() -> None:
    quota = Quota("node_type:http", 10, 1.0, burst=5)
    bucket = slowed(full(quota, T0), at(2))
    assert bucket.available == 0.0
    # The first token after the pause: it starts empty and refills at 6 a second.
    assert take(bucket, quota, at(1)).retry_at == at(2) + timedelta(microseconds=166667)
    # A shorter pause asked later does not shorten it.
    assert slowed(bucket, at(1)).paused_until == at(2)
    # At the end of the pause the bucket refills from empty, not from when it was paused.
    assert not take(bucket, quota, at(2)).granted
    assert take(bucket, quota, at(2) + timedelta(seconds=1 / 6)).granted


def test_disabled_quota_grants_and_keeps_its_bucket() -> None:
    quota = Quota("node_type:http", 1, 60.0, enabled=False)
    bucket = Bucket(0.0, T0)
    assert take(bucket, quota, T0) == take(bucket, quota, T0)
    assert take(bucket, quota, T0).granted


def test_take_all_is_all_or_nothing() -> None:
    roomy = Quota("node_type:http", 100, 1.0, burst=10)
    tight = Quota("credential:crm", 1, 10.0)
    buckets = {roomy.key: (roomy, full(roomy, T0)), tight.key: (tight, Bucket(0.0, T0))}
    changed, retry_at = take_all(buckets, T0)
    # Refused: nothing is taken; only the refusing bucket's queue moves.
    assert retry_at == at(10) and list(changed) == [tight.key]
    assert changed[tight.key] == Bucket(0.0, T0, None, at(20))
    granted, retry_at = take_all(buckets, at(10))
    assert retry_at is None
    assert granted[tight.key].available == 0.0
    assert granted[roomy.key].available == 9.0


def _most_in_a_window(grants: list[int], window: int) -> int:
    """The most grants in any half-open window ``[t, t + window)`` (microseconds)."""
    grants = sorted(grants)
    return max(bisect_left(grants, g + window) - i for i, g in enumerate(grants))


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.integers(1, 20),
    burst_share=st.floats(0, 1),
    per_s=st.sampled_from([0.5, 1.0, 3.0, 20.0]),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=120),
)
def test_no_window_grants_more_than_the_rate(
    tokens: int, burst_share: float, per_s: float, gaps: list[float]
) -> None:
    """Greedy takers at arbitrary moments (and each refused one coming back exactly when it
    was told): never more than ``tokens`` in any window of ``per_s``."""
    burst = max(1, round(burst_share * tokens))
    quota = Quota("node_type:http", tokens, per_s, burst=burst)
    bucket = full(quota, T0)
    now, last, grants = 0.0, 0.0, list[int]()
    waiting: list[float] = []
    for gap in gaps:
        now += gap * per_s / tokens
        waiting.append(now)
        while waiting:
            when = max(waiting[0], last)
            result = take(bucket, quota, at(when))
            bucket = result.bucket
            if result.granted:
                grants.append((at(when) - T0) // timedelta(microseconds=1))  # as it saw it
                last = when
                waiting.pop(0)
            else:
                assert result.retry_at is not None
                retry = (result.retry_at - T0).total_seconds()
                if retry > now + per_s * 3:
                    break
                waiting[0] = retry
    assert _most_in_a_window(grants, round(per_s * 1_000_000)) <= tokens


def test_the_steady_rate_is_the_whole_rate() -> None:
    """Default burst 1: tokens per window, evenly spaced, so the quota costs no throughput."""
    quota = Quota("node_type:http", 10, 1.0)
    bucket, now, grants = full(quota, T0), 0.0, 0
    while now < 10.0:
        result = take(bucket, quota, at(now))
        if result.granted:
            bucket, grants = result.bucket, grants + 1
        else:
            assert result.retry_at is not None
            now = (result.retry_at - T0).total_seconds()
    assert grants in (100, 101)


def test_steps_refused_together_get_slots_one_token_apart() -> None:
    """A backlog does not come back all at once for the next token: each refused step gets
    the next slot, and coming back at its slot it is granted."""
    quota = Quota("node_type:http", 5, 1.0)  # a token every 0.2 s
    bucket = take(full(quota, T0), quota, T0).bucket
    slots = []
    for _ in range(50):
        result = take(bucket, quota, T0)
        bucket = result.bucket
        assert result.retry_at is not None
        slots.append(result.retry_at)
    assert slots == [at(0.2 * (i + 1)) for i in range(50)]
    for slot in slots:
        result = take(bucket, quota, slot)
        assert result.granted, slot
        bucket = result.bucket


def test_a_queue_nobody_comes_for_is_forgotten() -> None:
    quota = Quota("node_type:http", 5, 1.0)
    bucket = take(full(quota, T0), quota, T0).bucket
    for _ in range(1000):  # 1,000 refused steps whose runs are then cancelled
        bucket = take(bucket, quota, T0).bucket
    assert bucket.queue_until == at(200.2)
    # A step coming while the queue's tokens go unused is granted (a slot reserves nothing);
    # once a token has sat unused past the grace period the queue is void.
    granted = take(bucket, quota, at(QUEUE_GRACE_S + 1))
    assert granted.granted and granted.bucket.queue_until is None
    refused = take(granted.bucket, quota, at(QUEUE_GRACE_S + 1))
    assert refused.retry_at == at(QUEUE_GRACE_S + 1.2)


def test_rate_limited_errors() -> None:
    assert rate_limited("http.429", {})
    assert rate_limited("salesforce.REQUEST_LIMIT_EXCEEDED", {})
    assert rate_limited("slack.ratelimited", {})
    assert rate_limited("twilio.20429", {})
    assert rate_limited("http.503", {"retry_after_s": 2})
    assert not rate_limited("http.503", {})
    # A node that knows its provider's rate-limit answers says so (Graph's code 4).
    assert rate_limited("instagram.4", {"rate_limited": True})
    assert not rate_limited("instagram.4", {"rate_limited": "yes"})


def _running_step() -> StepRecord:
    return StepRecord(
        id=StepId(7),
        run_id=RunId("r1"),
        node_id="call",
        node_type="http",
        branch="",
        iteration=0,
        status=StepStatus.RUNNING,
        attempt=1,
        available_at=T0,
        created_at=T0,
        started_at=T0,
        finished_at=None,
        lease_owner="w1",
        lease_expires_at=at(30),
        output=None,
        error=None,
        recoveries=0,
        claims=1,
    )


def test_a_deferred_step_is_due_at_retry_at_and_its_attempt_taken_back() -> None:
    step = _running_step()
    tr = deferred(step, ["credential:crm"], at(2.5))
    assert tr.event == (
        EventType.STEP_DEFERRED,
        {"node_id": "call", "quotas": ["credential:crm"], "retry_at": at(2.5).isoformat()},
    )
    plan = Settlement(T0, {"r1": RunFacts(RunStatus.RUNNING)})
    plan.complete(
        [StepCompletion(step, tr)], claims={step.id: 1}, free_signals=(), open_branches=set()
    )
    [write] = plan.step_writes
    assert (write.status, write.available_at, write.attempt_delta) == (
        StepStatus.SCHEDULED,
        at(2.5),
        -1,
    )
    assert write.finished_at is None and not write.held
    assert plan.run_changes == {} and plan.settled == {}
    # A paused run keeps its deferred step held until it resumes, due at the same moment.
    paused = Settlement(T0, {"r1": RunFacts(RunStatus.PAUSED)})
    paused.complete(
        [StepCompletion(step, tr)], claims={step.id: 1}, free_signals=(), open_branches=set()
    )
    assert paused.step_writes[0].held and paused.step_writes[0].available_at == at(2.5)
