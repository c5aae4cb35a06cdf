"""A join that is done (any / n_of / a failure) cancels what is left of its fork, but only
the steps that are not running. A step of a cancelled branch still running when the main
path ends keeps the run alive; when it completes, its branch is closed, so the completion
returns early and never settles the run: the run stays 'running' forever.

Failed at 6e3795d; fixed by e19aab3 (found by this review too): kept as a regression guard."""

from __future__ import annotations

from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

RACE = graph(
    "race-late",
    node("start", "trigger", "fork"),
    node(
        "fork",
        "parallel",
        "done",
        join="any",
        branches=[{"name": "fast", "start": "quick"}, {"name": "slow", "start": "slow_call"}],
    ),
    node("quick", "set", values={"winner": "fast"}),
    node("slow_call", "set", "after", values={"winner": "slow"}),
    node("after", "set", values={"x": 1}),
    node("done", "end", output="{{ steps.fork.output.fast }}"),
)


async def test_a_join_any_run_ends_although_a_cancelled_branch_step_was_still_running(
    settings: Settings,
) -> None:
    async with driven(settings) as d:
        run = await d.start(RACE)
        await d.tick()  # start
        await d.tick()  # fork parks, both branches start
        claimed = await d.claim()
        assert sorted(s.node_id for s in claimed) == ["quick", "slow_call"]
        done = await d.execute(claimed)
        quick = [c for c in done if c.step.node_id == "quick"]
        slow = [c for c in done if c.step.node_id == "slow_call"]
        await d.complete(quick)  # join any: done, the slow branch is cancelled, fork woken
        await d.idle()  # the fork joins, 'done' ends the main path (slow_call still running)
        await d.complete(slow)  # the slow HTTP-like step finally returns
        await d.idle()
        run = await d.c.store.get_run(run.id)
        steps = await d.by_node(run.id)
        assert steps["done"].status == StepStatus.SUCCEEDED
        assert run.status == RunStatus.SUCCEEDED, (
            f"run is {run.status.value} with nothing left to do: "
            f"{ {k: s.status.value for k, s in steps.items()} }"
        )


PARKS_LATE = graph(
    "race-parks-late",
    node("start", "trigger", "fork"),
    node(
        "fork",
        "parallel",
        "done",
        join="any",
        branches=[{"name": "fast", "start": "quick"}, {"name": "slow", "start": "nap"}],
    ),
    node("quick", "set", values={"winner": "fast"}),
    node("nap", "delay", duration="1h"),
    node("done", "end", output="{{ steps.fork.output.fast }}"),
)


async def test_a_step_of_a_cancelled_branch_that_parks_late_is_not_left_waiting(
    settings: Settings,
) -> None:
    async with driven(settings) as d:
        run = await d.start(PARKS_LATE)
        await d.tick()
        await d.tick()
        claimed = await d.claim()
        done = await d.execute(claimed)
        await d.complete([c for c in done if c.step.node_id == "quick"])
        await d.idle()  # the main path ends while 'nap' is still running its first execution
        await d.complete([c for c in done if c.step.node_id == "nap"])  # parks for 1 h
        await d.idle()
        steps = await d.by_node(run.id)
        run = await d.c.store.get_run(run.id)
        # The branch is cancelled: its step must not wait (and keep the run alive) for 1 h.
        assert steps["nap"].status != StepStatus.WAITING
        assert run.status == RunStatus.SUCCEEDED
