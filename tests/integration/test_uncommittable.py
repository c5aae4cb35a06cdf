"""A result the database cannot store fails its step (``engine.commit``); the other results
of the same batch are committed and the worker goes on."""

from __future__ import annotations

from flowyard.bootstrap import build
from flowyard.domain.statuses import RunStatus
from flowyard.nodes.base import EmptyConfig, NodeOutcome, NodeType, StepContext
from flowyard.nodes.registry import default_registry
from flowyard.settings import Settings
from support.runs import wait_for_runs


class Unstorable(NodeType[EmptyConfig]):
    """Outputs a value JSON cannot encode."""

    type_name = "unstorable"

    async def execute(self, ctx: StepContext, config: EmptyConfig) -> NodeOutcome:
        return NodeOutcome(output={"oops": {1, 2, 3}})


def flow(first: str) -> dict[str, object]:
    return {
        "name": f"flow-{first}",
        "start": "s",
        "nodes": [
            {"id": "s", "type": "trigger", "next": "x"},
            {"id": "x", "type": first, "next": "e"}
            if first != "set"
            else {"id": "x", "type": "set", "config": {"values": {"ok": 1}}, "next": "e"},
            {"id": "e", "type": "end"},
        ],
    }


async def test_an_unstorable_result_fails_its_run_and_spares_the_batch(settings: Settings) -> None:
    registry = default_registry(load_plugins=False)
    registry.register(Unstorable)
    container = await build(settings, registry=registry)
    try:
        bad, _, _ = await container.service.save_workflow(flow("unstorable"))
        good, _, _ = await container.service.save_workflow(flow("set"))
        runs = [(await container.service.start_run(bad.id, {}))[0]]
        runs += [(await container.service.start_run(good.id, {}))[0] for _ in range(5)]
        await wait_for_runs(container, [r.id for r in runs])
        ended = [await container.store.get_run(r.id) for r in runs]
    finally:
        await container.close()
    assert ended[0].status == RunStatus.FAILED
    assert ended[0].error_type == "engine.commit"
    assert [r.status for r in ended[1:]] == [RunStatus.SUCCEEDED] * 5
