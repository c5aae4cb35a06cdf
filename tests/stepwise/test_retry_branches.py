"""Retry of a run whose failing step was inside (nested) branches, on the latest
definition. Passes: kept as a regression guard."""

from __future__ import annotations

import copy

from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

V1 = graph(
    "retry-nested",
    node("start", "trigger", "outer"),
    node(
        "outer",
        "parallel",
        "done",
        branches=[{"name": "m", "start": "each"}, {"name": "s", "start": "side"}],
    ),
    node("each", "map", items=[1, 2, 3], start="item", max_concurrency=2),
    node("item", "condition", cases=[{"when": "item == 2", "next": "bad"}], default="good"),
    node("bad", "fail", error="item.bad"),
    node("good", "set", values={"i": "{{ item }}"}),
    node("side", "set", values={"s": 1}),
    node("done", "end", output="{{ steps.outer.output }}"),
)


async def test_retry_on_the_latest_definition_reruns_the_nested_fork(settings: Settings) -> None:
    async with driven(settings) as d:
        run = await d.start(V1)
        await d.idle()
        failed = await d.c.store.get_run(run.id)
        assert failed.status == RunStatus.FAILED
        assert failed.error["details"]["node_id"] == "outer"
        v2 = copy.deepcopy(V1)
        v2["nodes"][4] = node("bad", "set", values={"i": "fixed"})
        await d.c.service.save_workflow(v2)
        await d.c.service.retry_run(run.id, use_latest_definition=True)
        await d.idle()
        run = await d.c.store.get_run(run.id)
        assert run.status == RunStatus.SUCCEEDED, run.error
        assert run.output == {"m": [{"i": 1}, {"i": "fixed"}, {"i": 3}], "s": {"s": 1}}
