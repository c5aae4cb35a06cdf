"""A result the database cannot store fails its step (``engine.commit``); the other results
of the same batch are committed and the worker goes on."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest

from flowyard.bootstrap import build
from flowyard.domain.records import RunRecord
from flowyard.domain.statuses import RunStatus
from flowyard.nodes.base import EmptyConfig, NodeOutcome, NodeType, StepContext
from flowyard.nodes.registry import default_registry
from flowyard.settings import Settings
from flowyard.worker import execute, storable
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


class HugeInteger(NodeType[EmptyConfig]):
    """Outputs an integer Python cannot convert to text (more than 4,300 digits)."""

    type_name = "huge_integer"

    async def execute(self, ctx: StepContext, config: EmptyConfig) -> NodeOutcome:
        return NodeOutcome(output={"ok": 1, "n": [10**5000]})


class UnstorableSecret(NodeType[EmptyConfig]):
    """Outputs a value JSON cannot encode that holds something that must not be logged."""

    type_name = "unstorable_secret"

    async def execute(self, ctx: StepContext, config: EmptyConfig) -> NodeOutcome:
        return NodeOutcome(output={"oops": {"do-not-print-me-0451"}})


async def _run_one(settings: Settings, node: type[NodeType[EmptyConfig]]) -> RunRecord:
    registry = default_registry(load_plugins=False)
    registry.register(node)
    container = await build(settings, registry=registry)
    try:
        wf, _, _ = await container.service.save_workflow(flow(node.type_name))
        run, _ = await container.service.start_run(wf.id, {})
        await wait_for_runs(container, [run.id])
        ended = await container.store.get_run(run.id)
    finally:
        await container.close()
    return ended


async def test_an_integer_too_large_for_text_fails_the_step_with_its_place(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Python cannot serialise an integer of more than 4,300 digits: the step fails with the
    permanent ``output.invalid`` naming the place (not an internal error, not a crash), and
    nothing of the number reaches the log."""
    with caplog.at_level(logging.INFO):
        ended = await _run_one(settings, HugeInteger)
    assert ended.status == RunStatus.FAILED
    assert ended.error_type == "output.invalid"
    assert ended.error is not None
    assert ended.error["transient"] is False
    assert ended.error["details"]["pointer"] == "/output/n/0"
    assert ended.error["details"]["problem"] == "integer_too_large"
    assert "0000000000" not in caplog.text


async def test_a_refused_value_is_not_printed(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """What the database refused may be huge or secret: neither the error stored nor the log
    shows it."""
    with caplog.at_level(logging.INFO):
        ended = await _run_one(settings, UnstorableSecret)
    assert ended.status == RunStatus.FAILED
    assert ended.error_type == "engine.commit"
    assert "do-not-print-me" not in caplog.text
    assert "do-not-print-me" not in json.dumps(ended.error)


class LargeOutput(NodeType[EmptyConfig]):
    """Outputs about 2 MiB."""

    type_name = "large_output"

    async def execute(self, ctx: StepContext, config: EmptyConfig) -> NodeOutcome:
        return NodeOutcome(output={"blob": "x" * (2 * 1024 * 1024)})


async def test_an_output_over_the_limit_fails_the_step(settings: Settings) -> None:
    """``max_output_bytes`` caps what a step stores: over it, the permanent
    ``output.too_large`` (catchable), with the size and the limit in its details."""
    limited = settings.model_copy(update={"max_output_bytes": 1024 * 1024})
    ended = await _run_one(limited, LargeOutput)
    assert ended.status == RunStatus.FAILED
    assert ended.error_type == "output.too_large"
    assert ended.error is not None
    assert ended.error["transient"] is False
    assert ended.error["details"]["limit"] == 1024 * 1024
    assert ended.error["details"]["size"] > 2 * 1024 * 1024
    assert "xxxxxxxx" not in json.dumps(ended.error)


async def test_a_large_output_is_checked_off_the_event_loop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large result is checked and measured in a thread (walking megabytes would hold every
    other step, claim and commit of the process); under the limit it is stored."""
    loop_thread = threading.get_ident()
    threads: list[bool] = []
    checked = storable.storable

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident() != loop_thread)
        return checked(*args, **kwargs)

    monkeypatch.setattr(execute, "storable", recording)
    ended = await _run_one(settings, LargeOutput)
    assert ended.status == RunStatus.SUCCEEDED, ended.error
    # trigger and end on the loop, the large output in a thread
    assert sorted(threads) == [False, False, True]
