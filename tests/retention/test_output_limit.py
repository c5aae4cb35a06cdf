"""A small ``FLOWYARD_MAX_OUTPUT_BYTES`` keeps run rows small (decision 0031), on SQLite and
PostgreSQL: a step output or a run output over it fails the step with the permanent
``output.too_large`` (its size and the limit), nothing of the value is stored, and outputs
under it are stored as they are."""

from __future__ import annotations

import json

import pytest
from pydantic import Field, ValidationError

from flowyard.bootstrap import build
from flowyard.domain.statuses import RunStatus
from flowyard.nodes.base import NodeConfig, NodeOutcome, NodeType, StepContext
from flowyard.nodes.registry import default_registry
from flowyard.settings import Settings
from support.runs import wait_for_runs

LIMIT = 256 * 1024


class BlobConfig(NodeConfig):
    size: int = Field(ge=0, le=10_000_000)


class Blob(NodeType[BlobConfig]):
    """Outputs ``{"blob": "xxx..."}`` of ``size`` characters."""

    type_name = "blob"
    config_model = BlobConfig

    async def execute(self, ctx: StepContext, config: BlobConfig) -> NodeOutcome:
        return NodeOutcome(output={"blob": "x" * config.size})


def flow(name: str, sizes: list[int], end_output: object = None) -> dict[str, object]:
    nodes: list[dict[str, object]] = [{"id": "s", "type": "trigger", "next": "b0"}]
    for i, size in enumerate(sizes):
        following = f"b{i + 1}" if i + 1 < len(sizes) else "e"
        nodes.append({"id": f"b{i}", "type": "blob", "config": {"size": size}, "next": following})
    nodes.append({"id": "e", "type": "end", "config": {"output": end_output}})
    return {"name": name, "start": "s", "nodes": nodes}


async def test_outputs_over_a_small_limit_fail_their_step(settings: Settings) -> None:
    registry = default_registry(load_plugins=False)
    registry.register(Blob)
    container = await build(
        settings.model_copy(update={"max_output_bytes": LIMIT}), registry=registry
    )
    try:
        service = container.service
        both = {"a": "{{ steps.b0.output }}", "b": "{{ steps.b1.output }}"}
        flows = {
            "fits": flow("fits", [200_000], "{{ steps.b0.output }}"),
            "step-too-large": flow("step-too-large", [300_000]),
            "run-too-large": flow("run-too-large", [150_000, 150_000], both),
        }
        runs = {}
        for name, definition in flows.items():
            record, _, _ = await service.save_workflow(definition)
            runs[name] = (await service.start_run(record.id, {}))[0].id
        await wait_for_runs(container, list(runs.values()))
        fits = await service.get_run(runs["fits"])
        assert fits.run.status == RunStatus.SUCCEEDED
        assert len(fits.run.output["blob"]) == 200_000
        for name, node in (("step-too-large", "b0"), ("run-too-large", "e")):
            detail = await service.get_run(runs[name])
            assert detail.run.status == RunStatus.FAILED, name
            assert detail.run.error_type == "output.too_large"
            error = detail.run.error or {}
            assert error["transient"] is False and error["details"]["limit"] == LIMIT
            assert error["details"]["size"] > LIMIT
            [failed] = [s for s in detail.steps if s.node_id == node]
            assert failed.status.value == "failed" and failed.output is None
            assert "xxxxxxxx" not in json.dumps(error)
    finally:
        await container.close()


def test_the_smallest_limit_is_64_kib() -> None:
    assert Settings(max_output_bytes=64 * 1024).max_output_bytes == 65536
    with pytest.raises(ValidationError):
        Settings(max_output_bytes=64 * 1024 - 1)
