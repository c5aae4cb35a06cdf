"""Debounce and throttle on event triggers and hooks: a burst starts one run with the last
input, exactly once across dispatchers; a throttle lets ``limit`` starts through per window
and records the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from events.conftest import Events, echo
from flowyard.bootstrap import Container, build
from flowyard.domain.triggers import Controls, Debounce
from flowyard.settings import Settings
from flowyard.triggers.events import digest
from triggers.conftest import SECRET, Hooked, hooked  # noqa: F401 (the fixture)


async def test_a_burst_starts_one_run_with_the_last_input(events: Events) -> None:
    await events.trigger(
        name="ship",
        workflow="shipping",
        on={"event": "cart.changed"},
        debounce={"key": "{{ event.payload.customer }}", "period": "1s"},
    )

    answers = []
    for n in range(1, 6):
        posted = await events.http.post(
            "/events/cart.changed", json={"payload": {"customer": "c1", "n": n}}
        )
        answers.append(posted.json()["triggers"][0])
    other = await events.http.post(
        "/events/cart.changed", json={"payload": {"customer": "c2", "n": 0}}
    )

    assert {a["outcome"] for a in answers} == {"debounced"}
    assert [a["run_id"] for a in answers] == [None] * 5
    assert other.json()["triggers"][0]["outcome"] == "debounced"
    runs = await events.wait_runs("shipping", 2)
    await asyncio.sleep(1.5)  # the burst's period again: nothing more starts
    runs = await events.runs("shipping")
    assert sorted([r["input"] for r in runs], key=lambda i: i["customer"]) == [
        {"customer": "c1", "n": 5},
        {"customer": "c2", "n": 0},
    ]


@pytest.fixture
async def two(settings: Settings) -> AsyncIterator[tuple[Container, Container]]:
    """Two containers on one database with the ``shipping`` workflow."""
    first = await build(settings)
    second = await build(settings)
    try:
        await first.service.create_workflow(echo("shipping"), "test")
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_a_due_debounced_start_is_made_once_by_two_loops(
    two: tuple[Container, Container],
) -> None:
    first, second = two
    workflow = (await first.service.get_workflow("shipping")).id
    controls = Controls(debounce=Debounce(key="", period=0.05))
    for n in range(3):
        gated = await first.triggers.start_gated(
            "et:test", workflow, {"n": n}, {}, controls, idempotency_key=None, actor="t"
        )
        assert gated.outcome == "debounced"
    await asyncio.sleep(0.1)

    made = await asyncio.gather(first.triggers.fire_debounced(), second.triggers.fire_debounced())

    assert sorted(made) == [0, 1]
    runs = await first.service.list_runs(workflow="shipping")
    assert [r.input for r in runs] == [{"n": 2}]
    assert await first.store.pending_debounced("et:test") == []


async def test_an_event_while_a_start_is_made_begins_a_new_burst(
    two: tuple[Container, Container],
) -> None:
    first, _ = two
    store, workflow = first.store, (await first.service.get_workflow("shipping")).id
    now = first.clock()
    await store.debounce_start("et:x", "k", workflow, {"n": 1}, "t", now, now)
    [claimed] = await store.claim_debounced(now, 30.0)
    assert await store.claim_debounced(now, 30.0) == []  # claimed: no other loop takes it

    again = await store.debounce_start("et:x", "k", workflow, {"n": 2}, "t", now, now)

    assert again.burst == claimed.burst + 1
    assert await store.finish_debounced(claimed) is False  # the new burst stays
    [left] = await store.pending_debounced("et:x")
    assert left.input == {"n": 2}
    [next_claim] = await store.claim_debounced(now, 30.0)
    assert await store.finish_debounced(next_claim) is True


async def test_a_throttle_lets_limit_starts_through_and_records_the_rest(events: Events) -> None:
    made = await events.trigger(
        name="ship",
        workflow="shipping",
        on={"event": "ping"},
        throttle={"key": "{{ input.who }}", "limit": 2, "period": "1h"},
    )

    outcomes = []
    for n in range(4):
        posted = await events.http.post("/events/ping", json={"payload": {"who": "a", "n": n}})
        outcomes.append(posted.json()["triggers"][0])
    b = await events.http.post("/events/ping", json={"payload": {"who": "b", "n": 9}})

    assert [o["outcome"] for o in outcomes] == ["started", "started", "throttled", "throttled"]
    assert all(0 < o["retry_after_s"] <= 3600 for o in outcomes[2:])
    assert b.json()["triggers"][0]["outcome"] == "started"
    assert len(await events.wait_runs("shipping", 3)) == 3
    container: Container = events.live.app.state.container
    verdict = await container.store.throttle_take(
        f"et:{made['id']}", "unused-key", 1, 3600.0, container.clock()
    )
    assert verdict.allowed  # another key has its own window
    dropped = await container.store.throttle_take(
        f"et:{made['id']}",
        digest("a"),
        2,
        3600.0,
        container.clock(),
    )
    assert (dropped.allowed, dropped.dropped) == (False, 3)  # two recorded before, and this


async def test_a_hook_throttle_answers_202_throttled(hooked: Hooked) -> None:  # noqa: F811
    hook = await hooked.hook(
        auth={"scheme": "header_token", "credential": "hook-secret"},
        throttle={"limit": 1, "period": "1h"},
    )
    url = f"{hooked.base}/hooks/{hook['id']}"
    headers = {"X-Flowyard-Token": SECRET}

    first = await hooked.http.post(url, json={"email": "a@example.com"}, headers=headers)
    second = await hooked.http.post(url, json={"email": "b@example.com"}, headers=headers)

    assert first.status_code == 202 and first.json()["run_id"]
    assert second.status_code == 202, second.text
    assert second.json()["throttled"] is True and second.json()["run_id"] is None
    assert len(await hooked.runs()) == 1


async def test_a_hook_debounce_starts_one_run(hooked: Hooked) -> None:  # noqa: F811
    hook = await hooked.hook(
        auth={"scheme": "header_token", "credential": "hook-secret"},
        debounce={"period": "0.3s"},
    )
    url = f"{hooked.base}/hooks/{hook['id']}"
    headers = {"X-Flowyard-Token": SECRET}
    for who in ("a", "b", "c"):
        sent = await hooked.http.post(url, json={"email": f"{who}@example.com"}, headers=headers)
        assert sent.status_code == 202 and sent.json()["debounced"] is True, sent.text
    refused = await hooked.http.post(url, json={"email": 5}, headers=headers)
    assert refused.status_code == 422  # checked when it comes, not a period later

    async with asyncio.timeout(20):
        while not (runs := await hooked.runs()):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)
    runs = await hooked.runs()
    assert [r["input"] for r in runs] == [{"email": "c@example.com"}]
