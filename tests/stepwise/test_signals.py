"""Signals: a signal sent while the waiting step runs its first execution is lost (no wake
up), and one signal is taken by two waiting steps.

Failed at 6e3795d; fixed by e19aab3 (found by this review too): kept as a regression guard."""

from __future__ import annotations

from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

WAIT = graph(
    "wait-race",
    node("start", "trigger", "hold"),
    node("hold", "wait_for_signal", "done", signal="go"),
    node("done", "end", output="{{ steps.hold.output.payload }}"),
)


async def test_a_signal_sent_while_the_wait_executes_for_the_first_time_wakes_it(
    settings: Settings,
) -> None:
    async with driven(settings) as d:
        run = await d.start(WAIT)
        await d.tick()  # start
        [hold] = await d.claim()
        [completion] = await d.execute([hold])  # no signal yet: it will park
        _, woke = await d.c.service.send_signal(run.id, "go", {"ok": 1})
        assert not woke  # the step is running, not waiting: buffered
        await d.complete([completion])  # parks with no timer
        await d.idle()
        run = await d.c.store.get_run(run.id)
        steps = await d.by_node(run.id)
        assert (run.status, run.output) == (RunStatus.SUCCEEDED, {"ok": 1}), (
            f"run {run.status.value}, hold {steps['hold'].status.value} until "
            f"{steps['hold'].available_at}; the buffered signal is never taken"
        )


TWO_WAITERS = graph(
    "two-waiters",
    node("start", "trigger", "fork"),
    node(
        "fork",
        "parallel",
        "done",
        branches=[{"name": "a", "start": "wa"}, {"name": "b", "start": "wb"}],
    ),
    node("wa", "wait_for_signal", signal="go"),
    node("wb", "wait_for_signal", signal="go"),
    node("done", "end"),
)


async def test_one_signal_is_taken_by_one_waiting_step_only(settings: Settings) -> None:
    async with driven(settings) as d:
        run = await d.start(TWO_WAITERS)
        await d.idle()  # both branches wait for 'go'
        steps = await d.by_node(run.id)
        assert steps["wa"].status == steps["wb"].status == StepStatus.WAITING
        signal, _ = await d.c.service.send_signal(run.id, "go", {"n": 1})
        await d.idle()
        steps = await d.by_node(run.id)
        taken = [s.node_id for s in (steps["wa"], steps["wb"]) if s.status == StepStatus.SUCCEEDED]
        [stored] = await d.c.store.list_signals(run.id)
        assert taken == [next(s.node_id for s in steps.values() if s.id == stored.step_id)], (
            f"one signal ({signal.id}) was taken by {taken}"
        )
