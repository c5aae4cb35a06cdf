"""Run-end triggers: the dispatcher reads run ends from the event feed past a cursor in the
database and starts each target once, however many dispatchers share the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from events.conftest import SOURCE, Events, echo
from flowyard.bootstrap import Container, build
from flowyard.service.triggers import parse_trigger
from flowyard.settings import Settings
from flowyard.triggers.events import RUN_END_CURSOR
from support.runs import wait_for_runs


@pytest.fixture
async def two(settings: Settings) -> AsyncIterator[tuple[Container, Container]]:
    """Two containers (two processes' worth) on one database, with the workflows."""
    first = await build(settings)
    second = await build(settings)
    try:
        for definition in (SOURCE, echo("shipping")):
            await first.service.create_workflow(definition, "test")
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _trigger(container: Container, name: str, **fields: Any) -> None:
    on, config = parse_trigger(fields)
    await container.triggers.create(name=name, workflow="shipping", on=on, config=config)


async def _orders(container: Container, inputs: list[dict[str, Any]]) -> list[str]:
    ids = []
    for one in inputs:
        run, _ = await container.service.start_run("orders", one)
        ids.append(run.id)
    await wait_for_runs(container, ids)
    return ids


async def _drain(*containers: Container) -> None:
    """Dispatch on every container at once, in small batches, until none reads anything."""
    while True:
        read = await asyncio.gather(*(c.triggers.dispatch_run_ends(limit=2) for c in containers))
        if not any(read):
            return


async def _shipping_inputs(container: Container) -> list[Any]:
    runs = await container.service.list_runs(workflow="shipping", limit=100)
    return sorted((r.input for r in runs), key=lambda i: json.dumps(i, sort_keys=True))


async def test_a_run_end_starts_its_target_exactly_once_with_two_dispatchers(
    two: tuple[Container, Container],
) -> None:
    first, second = two
    await _trigger(first, "ship", on={"run": {"workflow": "orders", "statuses": ["succeeded"]}})
    totals = [1, 2, 3, 4, 5, 6, 7]
    await _orders(first, [{"total": t, "fail": t % 3 == 0} for t in totals])

    await _drain(first, second)
    await _drain(second, first)  # and again: nothing more

    expected = [{"total": t} for t in totals if t % 3 != 0]
    assert await _shipping_inputs(first) == expected
    assert await first.store.trigger_cursor(RUN_END_CURSOR) > 0


async def test_a_filter_over_the_ended_run_rejects(two: tuple[Container, Container]) -> None:
    first, _ = two
    await _trigger(
        first,
        "big",
        on={"run": {"workflow": "orders", "statuses": ["succeeded"]}},
        filter="run.output.total > 10",
    )
    await _trigger(
        first,
        "failures",
        on={"run": {"workflow": "orders", "statuses": ["failed"]}},
        input={"failed": "{{ run.id }}", "error": "{{ run.error.type }}", "st": "{{ run.status }}"},
    )
    small, big, bad = await _orders(
        first,
        [{"total": 5, "fail": False}, {"total": 50, "fail": False}, {"total": 1, "fail": True}],
    )

    await _drain(first)

    inputs = await _shipping_inputs(first)
    assert {"total": 50} in inputs
    assert {"failed": bad, "error": "order.bad", "st": "failed"} in inputs
    assert len(inputs) == 2
    assert small and big


async def test_runs_that_ended_before_the_trigger_do_not_fire_it(
    two: tuple[Container, Container],
) -> None:
    first, _ = two
    await _orders(first, [{"total": 1, "fail": False}])
    assert await first.triggers.dispatch_run_ends() == 0  # no trigger: nothing is read
    await _trigger(first, "ship", on={"run": {"workflow": "orders"}})

    await _drain(first)
    assert await _shipping_inputs(first) == []

    await _orders(first, [{"total": 2, "fail": False}])
    await _drain(first)
    assert await _shipping_inputs(first) == [{"total": 2}]


async def test_a_disabled_run_end_trigger_reads_nothing(two: tuple[Container, Container]) -> None:
    first, _ = two
    await _trigger(first, "ship", on={"run": {"workflow": "orders"}})
    await first.triggers.update("ship", enabled=False)
    await _orders(first, [{"total": 1, "fail": False}])

    assert await first.triggers.dispatch_run_ends() == 0
    assert await first.store.trigger_cursor(RUN_END_CURSOR) == 0
    assert await _shipping_inputs(first) == []


async def test_a_served_worker_process_dispatches_run_ends(events: Events) -> None:
    await events.trigger(name="ship", workflow="shipping", on={"run": {"workflow": "orders"}})
    started = await events.http.post(
        "/workflows/orders/runs", json={"input": {"total": 9, "fail": False}}
    )
    assert started.status_code == 202, started.text

    [shipped] = await events.wait_runs("shipping", 1)
    assert await events.output(shipped["id"]) == {"total": 9}
