"""Cost of failed map items: each failed branch result issues its own two
``_cancel_under`` UPDATEs (steps and branches of the whole run, matched with substr: no index
range), so a batch is no longer a fixed number of statements and a map with many failed
items does O(items) work per failure (quadratic overall: 2,000 half-failing items on PG
~5.8 ms/item, 8,000 ~9.6 ms/item, vs ~1.3-1.8 ms/item when they all succeed)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

N = 200


def mapped(name: str, target: str) -> dict[str, Any]:
    return graph(
        name,
        node("start", "trigger", "each"),
        node(
            "each",
            "map",
            "done",
            items=list(range(N)),
            start=target,
            max_concurrency=N,
            tolerated_failure_percentage=100,
        ),
        node("good", "set", values={"i": "{{ index }}"})
        if target == "good"
        else node("bad", "fail", error="item.bad"),
        node("done", "end"),
    )


async def _batch_statements(settings: Settings, target: str) -> int:
    async with driven(settings) as d:
        await d.start(mapped(f"cost-{target}", target))
        await d.tick()
        await d.tick()  # the map forks: N item steps scheduled
        claimed = await d.claim()
        assert len(claimed) == N
        done = await d.execute(claimed)
        count = 0
        engine = d.c.store._write.sync_engine  # type: ignore[attr-defined]

        def counter(*_: Any) -> None:
            nonlocal count
            count += 1

        sa.event.listen(engine, "before_cursor_execute", counter)
        try:
            await d.complete(done)  # one batch of N item results
        finally:
            sa.event.remove(engine, "before_cursor_execute", counter)
        return count


async def test_a_batch_of_failed_items_is_a_fixed_number_of_statements(settings: Settings) -> None:
    ok = await _batch_statements(settings, "good")
    failed = await _batch_statements(settings, "bad")
    assert failed <= ok + 10, f"{N} succeeded items: {ok} statements; {N} failed: {failed}"


WAITS = graph(
    "many-waits",
    node("start", "trigger", "hold"),
    node("hold", "wait_for_signal", "done", signal="reply", timeout="48h"),
    node("done", "end"),
)
RUNS = 100


async def test_a_batch_of_parked_signal_waits_is_a_fixed_number_of_statements(
    settings: Settings,
) -> None:
    """The campaign case (many runs parking on wait_for_signal in one batch): the new
    lost-wake-up check in BatchCompletion._write is one UPDATE per parked wait."""
    async with driven(settings) as d:
        record, _, _ = await d.c.service.save_workflow(WAITS)
        for i in range(RUNS):
            await d.c.service.start_run(record.id, {"i": i})
        await d.tick()  # every trigger
        claimed = await d.claim()
        assert len(claimed) == RUNS
        done = await d.execute(claimed)
        count = 0
        engine = d.c.store._write.sync_engine  # type: ignore[attr-defined]

        def counter(*_: Any) -> None:
            nonlocal count
            count += 1

        sa.event.listen(engine, "before_cursor_execute", counter)
        try:
            await d.complete(done)
        finally:
            sa.event.remove(engine, "before_cursor_execute", counter)
        assert count <= 20, f"{RUNS} parked waits took {count} statements"
