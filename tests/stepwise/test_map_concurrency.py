"""Map with max_concurrency and tolerated failures: failed items must not stall the
window, and the map must finish (both backends). Passes: kept as a regression guard."""

from __future__ import annotations

from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

MAPPED = graph(
    "mapped-window",
    node("start", "trigger", "each"),
    node(
        "each",
        "map",
        "done",
        items="{{ input.items }}",
        start="check",
        max_concurrency=2,
        tolerated_failure_percentage=50,
    ),
    node("check", "condition", cases=[{"when": "item.ok", "next": "ok"}], default="bad"),
    node("ok", "set", values={"i": "{{ index }}"}),
    node("bad", "fail", error="item.bad"),
    node("done", "end", output="{{ steps.each.output }}"),
)


async def test_failed_items_free_their_slot_and_the_map_finishes(settings: Settings) -> None:
    items = [{"ok": i not in (0, 1, 4)} for i in range(8)]  # 3 of 8 fail, 4 tolerated
    async with driven(settings) as d:
        run = await d.start(MAPPED, {"items": items})
        await d.idle(rounds=100)
        run = await d.c.store.get_run(run.id)
        assert run.status == RunStatus.SUCCEEDED, run.error
        assert run.output == [None, None, {"i": 2}, {"i": 3}, None, {"i": 5}, {"i": 6}, {"i": 7}]
