"""Child runs that end on their own (timeout, direct cancel) settle their parent's step.
These pass: kept as regression guards for the review."""

from __future__ import annotations

from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

CHILD = {
    **graph(
        "slow-child",
        node("start", "trigger", "hold"),
        node("hold", "wait_for_signal", "done", signal="go"),
        node("done", "end", output={"v": 1}),
    ),
    "run_timeout_s": 60,
}
PARENT = graph(
    "parent-of-slow",
    node("start", "trigger", "call"),
    {
        **node("call", "subworkflow", "done", workflow="slow-child"),
        "catch": [{"errors": ["subworkflow.failed"], "next": "caught"}],
    },
    node("done", "end", output="ok"),
    node("caught", "end", output="{{ steps.call.error.details.error.type }}"),
)


async def _child(d, parent_id):  # type: ignore[no-untyped-def]
    runs = await d.c.store.list_runs(limit=10)
    [child] = [r for r in runs if r.parent_run_id == parent_id]
    return child


async def test_a_child_that_times_out_fails_the_parent_step(settings: Settings) -> None:
    async with driven(settings) as d:
        await d.c.service.save_workflow(CHILD)
        parent = await d.start(PARENT)
        await d.idle()
        child = await _child(d, parent.id)
        assert child.status == RunStatus.WAITING
        d.clock.advance(61)
        assert await d.c.store.expire_runs(now=d.clock()) == [child.id]
        await d.idle()
        parent = await d.c.store.get_run(parent.id)
        assert (parent.status, parent.output) == (RunStatus.SUCCEEDED, "run.timeout")


async def test_a_child_cancelled_directly_during_a_parent_pause(settings: Settings) -> None:
    async with driven(settings) as d:
        await d.c.service.save_workflow(CHILD)
        parent = await d.start(PARENT)
        await d.idle()
        child = await _child(d, parent.id)
        await d.c.service.pause_run(parent.id)
        await d.c.service.cancel_run(child.id)
        await d.idle()
        assert (await d.c.store.get_run(parent.id)).status == RunStatus.PAUSED
        await d.c.service.resume_run(parent.id)
        await d.idle()
        parent = await d.c.store.get_run(parent.id)
        assert (parent.status, parent.output) == (RunStatus.SUCCEEDED, "child.cancelled")


SLOW = graph(
    "slow-step-child",
    node("start", "trigger", "work"),
    node("work", "set", "done", values={"v": 1}),
    node("done", "end"),
)
CALLER = graph(
    "caller",
    node("start", "trigger", "call"),
    node("call", "subworkflow", workflow="slow-step-child"),
)


async def test_cancelling_a_parent_stops_the_running_step_of_its_child(settings: Settings) -> None:
    """cancel_orphans (and drop_fork) cancel only the child's not-running steps, unlike a
    direct cancel (_end_run): the child's running step keeps its lease, the heartbeat keeps
    it alive, and its side effects go on after the child is 'cancelled'."""
    async with driven(settings) as d:
        await d.c.service.save_workflow(SLOW)
        parent = await d.start(CALLER)
        await d.tick()  # start
        await d.tick()  # call: the child run is created
        await d.tick()  # the child's trigger
        [work] = await d.claim()  # the child's slow step is running here
        await d.c.service.cancel_run(parent.id, actor="test")
        child = await d.c.store.get_run(work.run_id)
        assert child.status == RunStatus.CANCELLED
        kept = await d.c.store.extend_leases(d.worker, [work], now=d.clock(), lease_s=30)
        assert kept == set(), "the cancelled child's step is still held: its worker goes on"


async def test_a_child_key_taken_by_an_ordinary_run_does_not_wedge_the_parent(
    settings: Settings,
) -> None:
    """start_child finds its child by (workflow, idempotency_key 'child:<step>:<claims>'),
    a key any API caller may also use: the parent then waits on a run that is not its child
    (no parent_run_id, so its end never settles the parent's branch)."""
    async with driven(settings) as d:
        record, _, _ = await d.c.service.save_workflow(SLOW)
        parent = await d.start(CALLER)
        await d.tick()  # start: 'call' is scheduled
        call_step_id = (await d.by_node(parent.id))["call"].id
        # Someone starts the child workflow with the key the parent's step will use.
        await d.c.service.start_run(record.id, {}, idempotency_key=f"child:{call_step_id}:1")
        await d.idle()
        parent = await d.c.store.get_run(parent.id)
        assert parent.status == RunStatus.SUCCEEDED, (
            f"parent is {parent.status.value}: it waits on a run that is not its child"
        )
