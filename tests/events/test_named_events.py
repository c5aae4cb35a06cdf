"""``POST /events/{name}`` over real HTTP: every subscribed workflow starts, filters reject,
an event id de-duplicates, and bad triggers and bad events are refused."""

from __future__ import annotations

from events.conftest import Events


async def test_a_named_event_starts_every_subscribed_workflow(events: Events) -> None:
    await events.trigger(name="ship", workflow="shipping", on={"event": "order.placed"})
    await events.trigger(
        name="trail",
        workflow="audit-trail",
        on={"event": "order.placed"},
        input={"order": "{{ event.payload.order }}", "event": "{{ event.name }}"},
    )
    await events.trigger(name="other", workflow="shipping", on={"event": "order.cancelled"})

    posted = await events.http.post(
        "/events/order.placed", json={"payload": {"order": "A-1", "total": 5}}
    )

    assert posted.status_code == 202, posted.text
    body = posted.json()
    assert {t["trigger"]: t["outcome"] for t in body["triggers"]} == {
        "ship": "started",
        "trail": "started",
    }
    assert len(body["run_ids"]) == 2
    [ship] = await events.wait_runs("shipping", 1)
    [trail] = await events.wait_runs("audit-trail", 1)
    assert await events.output(ship["id"]) == {"order": "A-1", "total": 5}
    assert await events.output(trail["id"]) == {"order": "A-1", "event": "order.placed"}


async def test_a_filter_that_rejects_starts_nothing_and_says_so(events: Events) -> None:
    await events.trigger(
        name="big",
        workflow="shipping",
        on={"event": "order.placed"},
        filter="event.payload.total > 100",
    )

    small = await events.http.post("/events/order.placed", json={"payload": {"total": 5}})
    big = await events.http.post("/events/order.placed", json={"payload": {"total": 500}})

    assert small.json()["triggers"] == [
        {
            "trigger": "big",
            "workflow": "shipping",
            "outcome": "filtered",
            "run_id": None,
            "created": None,
            "fire_at": None,
            "retry_after_s": None,
            "error": None,
        }
    ]
    assert small.json()["run_ids"] == []
    assert big.json()["triggers"][0]["outcome"] == "started"
    runs = await events.wait_runs("shipping", 1)
    assert len(runs) == 1
    assert await events.output(runs[0]["id"]) == {"total": 500}


async def test_a_repeated_event_id_starts_nothing_new(events: Events) -> None:
    await events.trigger(name="ship", workflow="shipping", on={"event": "order.placed"})

    first = await events.http.post(
        "/events/order.placed", json={"payload": {"n": 1}, "event_id": "evt-1"}
    )
    again = await events.http.post(
        "/events/order.placed", json={"payload": {"n": 2}}, headers={"Idempotency-Key": "evt-1"}
    )
    other = await events.http.post(
        "/events/order.placed", json={"payload": {"n": 3}}, headers={"Idempotency-Key": "evt-2"}
    )

    [started] = first.json()["triggers"]
    [repeated] = again.json()["triggers"]
    assert started["created"] is True
    assert repeated["created"] is False
    assert repeated["run_id"] == started["run_id"]
    assert other.json()["triggers"][0]["created"] is True
    assert len(await events.wait_runs("shipping", 2)) == 2


async def test_an_event_nobody_listens_to_is_accepted(events: Events) -> None:
    posted = await events.http.post("/events/nobody.cares", json={"payload": {}})

    assert posted.status_code == 202
    assert posted.json()["triggers"] == []


async def test_an_input_the_target_refuses_is_that_triggers_failure(events: Events) -> None:
    await events.trigger(name="ship", workflow="shipping", on={"event": "e"})
    await events.trigger(name="trail", workflow="audit-trail", on={"event": "e"}, input="x")

    posted = await events.http.post("/events/e", json={"payload": {"a": 1}})

    outcomes = {t["trigger"]: t for t in posted.json()["triggers"]}
    assert outcomes["ship"]["outcome"] == "started"
    assert outcomes["trail"]["outcome"] == "failed"
    assert "input" in outcomes["trail"]["error"]


async def test_bad_triggers_and_events_are_refused(events: Events) -> None:
    cases = [
        ({"name": "t", "workflow": "shipping", "on": {}}, "/on"),
        (
            {"name": "t", "workflow": "shipping", "on": {"event": "e"}, "filter": "event.("},
            "/filter",
        ),
        (
            {"name": "t", "workflow": "orders", "on": {"run": {"workflow": "orders"}}},
            "/on/run/workflow",
        ),
        (
            {
                "name": "t",
                "workflow": "shipping",
                "on": {"event": "e"},
                "debounce": {"period": "soon"},
            },
            "/debounce/period",
        ),
        (
            {
                "name": "t",
                "workflow": "shipping",
                "on": {"event": "e"},
                "debounce": {"period": "1s"},
                "throttle": {"limit": 1, "period": "1s"},
            },
            "",
        ),
    ]
    for body, pointer in cases:
        made = await events.http.post("/event-triggers", json=body)
        assert made.status_code == 422, (body, made.text)
        assert made.headers["content-type"].startswith("application/problem+json")
        assert any(e["pointer"].startswith(pointer) for e in made.json()["errors"]), made.text
    missing = await events.http.post(
        "/event-triggers", json={"name": "t", "workflow": "nope", "on": {"event": "e"}}
    )
    assert missing.status_code == 404
    bad_name = await events.http.post("/events/a b", json={"payload": {}})
    assert bad_name.status_code in (404, 422)
    assert (await events.http.post("/events/e", json={"event_id": ""})).status_code == 422


async def test_triggers_are_managed_and_audited(events: Events) -> None:
    made = await events.trigger(name="ship", workflow="shipping", on={"event": "order.placed"})
    dup = await events.http.post(
        "/event-triggers", json={"name": "ship", "workflow": "shipping", "on": {"event": "x"}}
    )
    assert dup.status_code == 409

    off = await events.http.patch("/event-triggers/ship", json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    posted = await events.http.post("/events/order.placed", json={"payload": {}})
    assert posted.json()["triggers"] == []

    listed = await events.http.get("/event-triggers", params={"event": "order.placed"})
    assert [t["id"] for t in listed.json()["items"]] == [made["id"]]
    assert (await events.http.delete(f"/event-triggers/{made['id']}")).status_code == 204
    assert (await events.http.get("/event-triggers/ship")).status_code == 404
    audit = (await events.http.get("/audit", params={"limit": 200})).json()["items"]
    actions = {e["action"] for e in audit}
    assert {"event_trigger.create", "event_trigger.update", "event_trigger.delete"} <= actions
    assert "event.post" in actions
