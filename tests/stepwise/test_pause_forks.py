"""Pause/resume of a run whose map is part-way (max_concurrency), and a signal delivered
during the pause. These pass: regression guards."""

from __future__ import annotations

from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

PAUSED_MAP = graph(
    "paused-map",
    node("start", "trigger", "each"),
    node("each", "map", "hold", items=[0, 1, 2, 3], start="work", max_concurrency=2),
    node("work", "set", values={"i": "{{ item }}"}),
    node("hold", "wait_for_signal", "done", signal="go"),
    node("done", "end", output="{{ steps.each.output }}"),
)


async def test_items_started_during_a_pause_wait_for_the_resume(settings: Settings) -> None:
    async with driven(settings) as d:
        run = await d.start(PAUSED_MAP)
        await d.tick()
        await d.tick()  # items 0 and 1 scheduled
        claimed = await d.claim()
        await d.c.service.pause_run(run.id)
        await d.complete(await d.execute(claimed))  # the join starts items 2 and 3: held
        assert await d.claim() == []
        held = [s for s in await d.steps(run.id) if s.status == StepStatus.SCHEDULED]
        assert len(held) == 2
        await d.c.service.resume_run(run.id)
        await d.idle()
        await d.c.service.pause_run(run.id)
        await d.c.service.send_signal(run.id, "go", {"x": 1})
        await d.idle()
        assert (await d.c.store.get_run(run.id)).status == RunStatus.PAUSED
        await d.c.service.resume_run(run.id)
        await d.idle()
        run = await d.c.store.get_run(run.id)
        assert run.status == RunStatus.SUCCEEDED
        assert run.output == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}]
