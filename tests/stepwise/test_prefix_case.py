"""Cancelling what is under a failed branch uses ``LIKE prefix%``; SQLite's LIKE ignores
ASCII case, so branch "a" failing cancels the nested work of its sibling branch "A" (names
are case-sensitive and both valid). The sibling's inner fork then never joins: the run
hangs.

Failed at 6e3795d; fixed by e19aab3 (found by this review too): kept as a regression guard."""

from __future__ import annotations

from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

CASES = graph(
    "case-siblings",
    node("start", "trigger", "outer"),
    node(
        "outer",
        "parallel",
        "done",
        continue_on_error=True,
        branches=[{"name": "a", "start": "boom"}, {"name": "A", "start": "inner"}],
    ),
    node("boom", "fail", error="x.failed"),
    node("inner", "parallel", branches=[{"name": "x", "start": "work"}]),
    node("work", "delay", duration="10s"),
    node("done", "end", output="{{ steps.outer.output }}"),
)


async def test_a_failing_branch_does_not_cancel_a_sibling_whose_name_differs_in_case(
    settings: Settings,
) -> None:
    async with driven(settings) as d:
        run = await d.start(CASES)
        await d.tick()  # start
        await d.tick()  # outer forks
        claimed = await d.claim()
        done = {c.step.node_id: c for c in await d.execute(claimed)}
        await d.complete([done["inner"]])  # branch A forks: 'work' scheduled in /..A/..x
        await d.complete([done["boom"]])  # branch a fails: cancel under '/<outer>.a/'
        await d.idle()  # 'work' parks 10 s (unless cancelled)
        d.clock.advance(10)
        await d.idle()
        steps = await d.by_node(run.id)
        run = await d.c.store.get_run(run.id)
        assert steps["work"].status == StepStatus.SUCCEEDED, steps["work"].status
        assert run.status == RunStatus.SUCCEEDED, run.status
