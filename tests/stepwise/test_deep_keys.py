"""Branch keys grow by '/<step id>.<name>' per nesting level (names up to 63 characters),
but ``steps.branch`` and ``branches.key`` are VARCHAR(200): on PostgreSQL a valid definition
with three nested parallels of long branch names (after a few steps) cannot commit its
innermost fork: the completion raises a non-transient DataError.

Failed at 6e3795d; fixed by e19aab3 (found by this review too): kept as a regression guard."""

from __future__ import annotations

import pytest

from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from stepwise.drive import driven, graph, node

L1, L2, L3 = ("a" * 63, "b" * 63, "c" * 63)
DEEP = graph(
    "deep-forks",
    node("start", "trigger", "pad"),
    # Step ids of two digits or more (as in any real database) push the key past 200.
    node("pad", "map", "p1", items=list(range(12)), start="noop"),
    node("noop", "set", values={"n": 1}),
    node("p1", "parallel", "done", branches=[{"name": L1, "start": "p2"}]),
    node("p2", "parallel", branches=[{"name": L2, "start": "p3"}]),
    node("p3", "parallel", branches=[{"name": L3, "start": "leaf"}]),
    node("leaf", "set", values={"ok": True}),
    node("done", "end", output="{{ steps.p1.output }}"),
)


async def test_three_nested_parallels_with_long_branch_names_complete(settings: Settings) -> None:
    async with driven(settings) as d:
        run = await d.start(DEEP)
        try:
            await d.idle()
        except Exception as exc:  # the completion transaction fails
            pytest.fail(f"completing the fork raised {type(exc).__name__}: {str(exc)[:200]}")
        run = await d.c.store.get_run(run.id)
        assert run.status == RunStatus.SUCCEEDED


async def test_one_uncommittable_completion_does_not_stall_the_worker(settings: Settings) -> None:
    """What a real worker does with that DataError: its committer task dies (only
    StoreUnavailable is handled), the step stays leased (the heartbeat keeps extending it),
    nothing else this worker executes is committed, and its shutdown hangs in _drain."""
    import asyncio
    import contextlib

    from support.harness import eventually

    async with driven(settings) as d:
        worker = d.c.new_worker()
        task = asyncio.create_task(worker.run())
        try:
            deep = await d.start(DEEP)

            async def p3_claimed() -> bool:
                steps = await d.by_node(deep.id)
                return "p3" in steps and steps["p3"].attempt >= 1

            await eventually(p3_claimed, "p3 to be claimed")
            await asyncio.sleep(0.3)
            simple = await d.start(
                graph("simple", node("start", "trigger", "end"), node("end", "end"))
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while loop.time() < deadline:
                if (await d.c.store.get_run(simple.id)).status.is_terminal:
                    break
                await asyncio.sleep(0.05)
            status = (await d.c.store.get_run(simple.id)).status
            worker.stop()
            stopped, _ = await asyncio.wait([task], timeout=3)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        assert status == RunStatus.SUCCEEDED, f"an unrelated run is stuck {status.value}"
        assert stopped, "the worker does not stop"
