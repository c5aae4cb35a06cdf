"""Parallel branches, maps and sub-workflows with real workers, on both backends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from flowyard.bootstrap import Container
from flowyard.domain.ids import RunId
from flowyard.domain.statuses import RunStatus, StepStatus
from support.harness import eventually
from support.runs import run_definition, wait_for_runs

EXAMPLES = Path(__file__).parents[2] / "examples"


def graph(name: str, *nodes: dict[str, Any], start: str = "start") -> dict[str, Any]:
    return {"name": name, "start": start, "nodes": list(nodes)}


def node(node_id: str, node_type: str, next_: str | None = None, **config: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"id": node_id, "type": node_type, "config": config}
    if next_ is not None:
        spec["next"] = next_
    return spec


async def test_parallel_enrichment_joins_every_branch(container: Container) -> None:
    definition = json.loads((EXAMPLES / "parallel_enrichment.json").read_text())
    lead = {"email": "cto@bigcorp.example", "employees": 5000, "title": "CTO"}
    detail = await run_definition(container, definition, lead)
    assert detail.run.status == RunStatus.SUCCEEDED, detail.run.error
    assert detail.run.output == {
        "queue": "sales",
        "lead": {
            "domain": "bigcorp.example",
            "segment": "enterprise",
            "decision_maker": True,
            "score": 80,
        },
    }
    steps = {s.node_id: s for s in detail.steps}
    assert steps["enrich"].status == StepStatus.SUCCEEDED
    assert set(steps["enrich"].output) == {"company", "person", "score"}
    # Branch steps carry their branch; the main path does not.
    assert steps["company_segment"].branch.startswith(f"/{steps['enrich'].id}.")
    assert steps["combine"].branch == ""


SLOW_SIBLING = graph(
    "fork-fails",
    node("start", "trigger", "fork"),
    {
        **node(
            "fork",
            "parallel",
            "after",
            branches=[{"name": "bad", "start": "boom"}, {"name": "slow", "start": "sleep"}],
        ),
        "catch": [{"errors": ["parallel.branch_failed"], "next": "caught"}],
    },
    node("boom", "fail", error="lookup.failed", message="no such lead"),
    node("sleep", "delay", "never", duration="1h"),
    node("never", "set", values={"x": 1}),
    node("after", "end"),
    node("caught", "end", output="{{ steps.fork.error }}"),
)


async def test_a_failing_branch_fails_the_parallel_node_and_cancels_its_siblings(
    container: Container,
) -> None:
    detail = await run_definition(container, SLOW_SIBLING)
    assert detail.run.status == RunStatus.SUCCEEDED
    error = detail.run.output
    assert error["type"] == "parallel.branch_failed"
    assert error["details"]["failed"]["bad"]["type"] == "lookup.failed"
    steps = {s.node_id: s for s in detail.steps}
    assert steps["sleep"].status == StepStatus.CANCELLED  # the sibling stopped waiting
    assert "never" not in steps


async def test_continue_on_error_lets_siblings_finish_and_reports_the_failure(
    container: Container,
) -> None:
    definition = json.loads(json.dumps(SLOW_SIBLING).replace('"1h"', '"0s"'))
    definition["nodes"][1]["config"]["continue_on_error"] = True
    definition["nodes"][1]["next"] = "after"
    detail = await run_definition(container, definition)
    steps = {s.node_id: s for s in detail.steps}
    assert detail.run.status == RunStatus.SUCCEEDED
    assert steps["never"].status == StepStatus.SUCCEEDED
    assert steps["fork"].output["slow"] == {"x": 1}
    assert steps["fork"].output["_errors"]["bad"]["type"] == "lookup.failed"


async def test_join_any_goes_on_with_the_first_success(container: Container) -> None:
    race = graph(
        "race",
        node("start", "trigger", "fork"),
        node(
            "fork",
            "parallel",
            "done",
            join="any",
            branches=[{"name": "fast", "start": "quick"}, {"name": "slow", "start": "wait"}],
        ),
        node("quick", "set", values={"winner": "fast"}),
        node("wait", "delay", "late", duration="1h"),
        node("late", "set", values={"winner": "slow"}),
        node("done", "end", output="{{ steps.fork.output.fast }}"),
    )
    detail = await run_definition(container, race)
    assert detail.run.output == {"winner": "fast"}
    assert {s.node_id: s.status for s in detail.steps}["wait"] == StepStatus.CANCELLED


MAPPED = graph(
    "mapped",
    node("start", "trigger", "each"),
    node(
        "each",
        "map",
        "done",
        items="{{ input.contacts }}",
        start="greet",
        max_concurrency=3,
        tolerated_failure_percentage=10,
    ),
    node("greet", "condition", cases=[{"when": "item.ok", "next": "hello"}], default="bad"),
    node("hello", "set", values={"text": "Hello {{ item.name }} #{{ index }}"}),
    node("bad", "fail", error="contact.invalid"),
    node("done", "end", output="{{ steps.each.output }}"),
)


async def test_map_runs_each_item_in_order_with_bounded_concurrency(container: Container) -> None:
    contacts = [{"name": f"c{i}", "ok": i != 7} for i in range(25)]
    detail = await run_definition(container, MAPPED, {"contacts": contacts})
    assert detail.run.status == RunStatus.SUCCEEDED, detail.run.error
    expected: list[Any] = [{"text": f"Hello c{i} #{i}"} for i in range(25)]
    expected[7] = None  # one failure in 25 is within the 10 % tolerated
    assert detail.run.output == expected
    hello = [s for s in detail.steps if s.node_id == "hello"]
    assert len(hello) == 24 and len({s.branch for s in hello}) == 24


async def test_map_fails_beyond_the_tolerated_failures(container: Container) -> None:
    contacts = [{"name": f"c{i}", "ok": i % 4 != 0} for i in range(12)]  # 3 of 12 fail
    detail = await run_definition(container, MAPPED, {"contacts": contacts})
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error is not None
    assert detail.run.error["type"] == "map.failed"


async def test_map_over_an_empty_list_and_a_non_list(container: Container) -> None:
    assert (await run_definition(container, MAPPED, {"contacts": []})).run.output == []
    detail = await run_definition(container, MAPPED, {"contacts": "nope"})
    assert detail.run.error is not None and detail.run.error["type"] == "map.items"


CHILD = graph(
    "child-flow",
    node("start", "trigger", "double"),
    node("double", "set", "done", values={"value": "{{ input.n * 2 }}"}),
    node("done", "end", output="{{ steps.double.output }}"),
)
PARENT = graph(
    "parent-flow",
    node("start", "trigger", "call"),
    node(
        "call",
        "subworkflow",
        "done",
        workflow="child-flow",
        input={"n": "{{ input.n }}"},
        output={"doubled": "{{ child.output.value }}"},
    ),
    node("done", "end", output="{{ steps.call.output }}"),
)


async def test_a_subworkflow_runs_as_a_child_and_maps_its_output(container: Container) -> None:
    await container.service.save_workflow(CHILD)
    detail = await run_definition(container, PARENT, {"n": 21})
    assert detail.run.status == RunStatus.SUCCEEDED, detail.run.error
    assert detail.run.output == {"doubled": 42}
    children = [r for r in await container.store.list_runs(limit=10) if r.parent_run_id]
    assert [(c.parent_run_id, c.status) for c in children] == [(detail.run.id, RunStatus.SUCCEEDED)]


async def test_a_failed_child_fails_the_subworkflow_step(container: Container) -> None:
    failing = graph("child-flow", node("start", "trigger", "no"), node("no", "fail"))
    await container.service.save_workflow(failing)
    detail = await run_definition(container, PARENT, {"n": 1})
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error is not None and detail.run.error["type"] == "subworkflow.failed"


async def test_cancelling_the_parent_cancels_its_children(container: Container) -> None:
    waiting = graph(
        "child-flow",
        node("start", "trigger", "hold"),
        node("hold", "wait_for_signal", signal="go"),
    )
    await container.service.save_workflow(waiting)
    record, _, _ = await container.service.save_workflow(PARENT)
    parent, _ = await container.service.start_run(record.id, {"n": 1})
    worker = container.new_worker()
    task = asyncio.create_task(worker.run())
    try:

        async def child_waits() -> RunId | None:
            runs = [r for r in await container.store.list_runs(limit=10) if r.parent_run_id]
            return runs[0].id if runs and runs[0].status == RunStatus.WAITING else None

        child_id = await eventually(child_waits, "the child run to wait")
        await container.service.cancel_run(parent.id, actor="test")
        child = await container.store.get_run(child_id)
    finally:
        worker.stop()
        await task
    assert child.status == RunStatus.CANCELLED
    assert (await container.store.get_run(parent.id)).status == RunStatus.CANCELLED


async def test_an_unknown_subworkflow_fails_the_step(container: Container) -> None:
    detail = await run_definition(container, PARENT, {"n": 1})
    assert detail.run.error is not None
    assert detail.run.error["type"] == "subworkflow.not_found"
    await wait_for_runs(container, [detail.run.id])


async def test_retrying_a_cancelled_parent_starts_a_new_child(container: Container) -> None:
    waiting = graph(
        "child-flow",
        node("start", "trigger", "hold"),
        node("hold", "wait_for_signal", "done", signal="go"),
        node("done", "end", output={"value": 7}),
    )
    await container.service.save_workflow(waiting)
    record, _, _ = await container.service.save_workflow(PARENT)
    parent, _ = await container.service.start_run(record.id, {"n": 1})
    worker = container.new_worker()
    task = asyncio.create_task(worker.run())
    try:

        async def children(status: RunStatus) -> list[RunId]:
            runs = await container.store.list_runs(limit=10)
            return [r.id for r in runs if r.parent_run_id and r.status == status]

        async def one_waiting() -> list[RunId]:
            return await children(RunStatus.WAITING)

        [first] = await eventually(one_waiting, "the first child to wait")
        await container.service.cancel_run(parent.id, actor="test")
        await container.service.retry_run(parent.id, actor="test")
        [second] = await eventually(one_waiting, "a second child to wait")
        assert second != first
        await container.service.send_signal(second, "go", None)

        async def parent_done() -> bool:
            return (await container.store.get_run(parent.id)).status.is_terminal

        await eventually(parent_done, "the parent to end")
    finally:
        worker.stop()
        await task
    done = await container.store.get_run(parent.id)
    assert (done.status, done.output) == (RunStatus.SUCCEEDED, {"doubled": 7})
    assert (await container.store.get_run(first)).status == RunStatus.CANCELLED


async def test_a_workflow_calling_itself_stops_at_the_depth_limit(container: Container) -> None:
    recursive = graph(
        "child-flow",
        node("start", "trigger", "again"),
        node("again", "subworkflow", "done", workflow="child-flow"),
        node("done", "end"),
    )
    detail = await run_definition(container, recursive, {}, timeout_s=60)
    assert detail.run.status == RunStatus.FAILED
    runs = await container.store.list_runs(limit=50)
    assert len(runs) == 11  # the run and 10 nested children, the deepest refused
    deepest = [r for r in runs if r.error_type == "subworkflow.too_deep"]
    assert len(deepest) == 1
    assert all(r.status == RunStatus.FAILED for r in runs)
