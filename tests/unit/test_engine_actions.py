"""The state-machine decisions of ``engine/actions.py``, without a database: where a run is,
what it may do there, and the move an action makes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.state_machine import StateConfig
from flowyard.domain.statuses import RunStatus
from flowyard.engine import actions
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.registry import default_registry

SAMPLE = json.loads(
    (Path(__file__).parents[2] / "examples" / "approval_state_machine.json").read_text()
)
NOW = datetime(2026, 12, 1, tzinfo=UTC)
Machine = tuple[CompiledWorkflow, dict[str, StateConfig]]


@pytest.fixture(scope="module")
def machine() -> Machine:
    validator = DefinitionValidator(default_registry(load_plugins=False), ExpressionEngine())
    wf = validator.validate(SAMPLE).compiled()
    return wf, actions.state_nodes(wf)


def test_a_new_run_is_in_its_initial_state(machine: Machine) -> None:
    wf, states = machine
    assert actions.initial_state(wf, states) == "draft"
    assert actions.known_state(wf, states, None) == "draft"


def test_waiting_lists_allowed_and_refused_actions(
    machine: Machine,
) -> None:
    _, states = machine
    where = actions.position(states, RunStatus.WAITING, "draft")
    assert (where.status, [a.id for a in where.allowed]) == ("waiting", ["submit"])
    assert [(a.id, why) for a, why in where.unavailable] == [
        ("archive", "state 'archived' is disabled")
    ]


def test_a_paused_run_lists_every_action_as_unavailable_with_its_reason(
    machine: Machine,
) -> None:
    _, states = machine
    where = actions.position(states, RunStatus.PAUSED, "draft")
    assert where.allowed == []
    assert [(a.id, why) for a, why in where.unavailable] == [
        ("submit", "the run is paused"),
        ("archive", "state 'archived' is disabled"),
    ]


def test_moves_and_refusals(machine: Machine) -> None:
    _, states = machine
    where = actions.position(states, RunStatus.RUNNING, "pending_review")
    made = actions.move(
        states,
        where,
        "approve",
        run_id="r",
        actor="user:ada",
        now=NOW,
        payload={"ok": 1},
    )
    assert (made["from"], made["to"], made["payload"]) == ("pending_review", "approved", {"ok": 1})
    final = actions.position(states, RunStatus.RUNNING, "approved")
    assert final.status == "final"
    with pytest.raises(Conflict, match="final state 'approved'"):
        actions.move(states, final, "submit", run_id="r", actor="a", now=NOW, payload=None)
    with pytest.raises(Conflict, match="not allowed from state 'pending_review'"):
        actions.move(states, where, "submit", run_id="r", actor="a", now=NOW, payload=None)
    with pytest.raises(NotFound, match="no action 'fly'"):
        actions.move(states, where, "fly", run_id="r", actor="a", now=NOW, payload=None)
