"""State-machine actions, decided without I/O.

A run's state is the target of its last move (the ``@action`` signals the service records),
else its initial state: the first state its start leads to without a choice (every
states/actions definition has one). So an action takes effect the moment it is recorded;
the state's step follows the moves on a worker, running ``on_enter`` nodes after
(docs/decisions/0018-actions-take-effect-when-recorded.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.events import EventType
from flowyard.domain.records import MoveFacts, MovePlan, SignalRecord
from flowyard.domain.state_machine import StateAction, StateConfig
from flowyard.domain.statuses import RunStatus
from flowyard.engine.compiled import CompiledWorkflow

Where = Literal["waiting", "moving", "paused", "final", "ended"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a run is: ``status`` waiting (in ``state``; ``allowed`` actions may be taken),
    moving (not in a state yet: a graph whose first state depends on the path), paused,
    final (its state is final) or ended (the run ended elsewhere)."""

    state: str | None
    status: Where
    allowed: list[StateAction]
    unavailable: list[tuple[StateAction, str]]


def has_states(wf: CompiledWorkflow) -> bool:
    """True for a state machine (a workflow with a ``state`` node)."""
    return any(isinstance(node.config, StateConfig) for node in wf.nodes.values())


def state_nodes(wf: CompiledWorkflow) -> dict[str, StateConfig]:
    """The workflow's states by node id (Conflict when it is not a state machine)."""
    states = {
        node.id: node.config for node in wf.nodes.values() if isinstance(node.config, StateConfig)
    }
    if not states:
        raise Conflict(f"workflow {wf.definition.name!r} is not a state machine: it has no actions")
    return states


def initial_state(wf: CompiledWorkflow, states: dict[str, StateConfig]) -> str | None:
    """The state a new run is in: the first state node its start reaches through nodes that
    have one way on (no condition, no route). None when the way there is a choice."""
    node_id: str | None = wf.definition.start
    for _ in range(len(wf.nodes)):
        if node_id is None or node_id not in wf.nodes:
            return None
        if node_id in states:
            return node_id
        node = wf.nodes[node_id]
        if node.node_type.branching or node.node_type.routes(node.config):
            return None
        node_id = node.spec.next
    return None


def position(
    states: dict[str, StateConfig],
    run_status: RunStatus,
    state: str | None,
) -> Position:
    """Where the run in ``state`` (see :func:`known_state`) is, given its status."""
    if run_status.is_terminal:
        final = run_status == RunStatus.SUCCEEDED and state in states and states[state].final
        return Position(state, "final" if final else "ended", [], [])
    if state is None or state not in states:
        return Position(state, "moving", [], [])
    config = states[state]
    if config.final:
        return Position(state, "final", [], [])
    allowed: list[StateAction] = []
    unavailable: list[tuple[StateAction, str]] = []
    for action in config.actions:
        reason = _refusal(action, states)
        if reason is None:
            allowed.append(action)
        else:
            unavailable.append((action, reason))
    if run_status == RunStatus.PAUSED:
        paused = [(a, "the run is paused") for a in allowed]
        return Position(state, "paused", [], paused + unavailable)
    return Position(state, "waiting", allowed, unavailable)


def known_state(
    wf: CompiledWorkflow, states: dict[str, StateConfig], last_move: SignalRecord | None
) -> str | None:
    """The run's state as its moves tell it: the target of the last one, else the initial
    state. None when only its steps can tell (a graph whose first state is a choice, or a
    graph action whose ``to_state`` names no state node): then the waiting state step."""
    state = _target(last_move) if last_move is not None else initial_state(wf, states)
    return state if state in states else None


def move(
    states: dict[str, StateConfig],
    where: Position,
    action_id: str,
    *,
    run_id: str,
    actor: str,
    now: datetime,
    payload: Any,
) -> dict[str, Any]:
    """The move ``action_id`` makes from ``where`` (recorded as the run's next ``@action``
    signal). NotFound for an action the workflow lacks; Conflict, with the reason, for one
    that may not be taken now."""
    known = {a.id for config in states.values() for a in config.actions}
    if action_id not in known:
        raise NotFound(f"this workflow has no action {action_id!r}")
    detail = {"state": where.state, "status": where.status}
    if where.status in ("final", "ended"):
        what = f"in the final state {where.state!r}" if where.status == "final" else "ended"
        raise Conflict(f"run {run_id} is {what}; no action can move it", detail=detail)
    if where.status == "moving":
        raise Conflict(
            f"run {run_id} has not entered a state yet; try again shortly", detail=detail
        )
    if where.status == "paused":
        raise Conflict(f"run {run_id} is paused; resume it first", detail=detail)
    assert where.state is not None
    action = states[where.state].action(action_id)
    if action is None:
        allowed = [a.id for a in where.allowed]
        raise Conflict(
            f"action {action_id!r} is not allowed from state {where.state!r} "
            f"(allowed now: {', '.join(allowed) or 'none'})",
            detail={**detail, "allowed": allowed},
        )
    reason = _refusal(action, states)
    if reason is not None:
        raise Conflict(f"action {action_id!r} is refused: {reason}", detail=detail)
    return {
        "from": where.state,
        "to": action.to_state,
        "action": action.id,
        "by": actor,
        "at": now.isoformat(),
        "payload": payload,
    }


def decide(
    wf: CompiledWorkflow,
    states: dict[str, StateConfig],
    facts: MoveFacts,
    action_id: str,
    *,
    actor: str,
    now: datetime,
    payload: Any,
) -> MovePlan:
    """The move ``action_id`` makes given the facts read under the run's lock, and its
    ``state.transition`` event (raises NotFound or Conflict to refuse; see :func:`move`)."""
    last = facts.moves[0] if facts.moves else None
    state = known_state(wf, states, last) or facts.waiting_in
    where = position(states, facts.run.status, state)
    run_id = facts.run.id
    made = move(states, where, action_id, run_id=run_id, actor=actor, now=now, payload=payload)
    return made, (EventType.STATE_TRANSITION, {k: made[k] for k in ("from", "to", "action", "by")})


def history(moves: Sequence[SignalRecord]) -> list[dict[str, Any]]:
    """Every move of ``moves`` (give them oldest first): from, to, action, by, at and the
    payload it carried."""
    return [
        {
            "from": m.payload.get("from"),
            "to": m.payload.get("to"),
            "action": m.payload.get("action"),
            "by": m.payload.get("by"),
            "at": m.payload.get("at"),
            "payload": m.payload.get("payload"),
        }
        for m in moves
        if isinstance(m.payload, dict)
    ]


def _target(last_move: SignalRecord) -> str | None:
    to = last_move.payload.get("to") if isinstance(last_move.payload, dict) else None
    return to if isinstance(to, str) else None


def _refusal(action: StateAction, states: dict[str, StateConfig]) -> str | None:
    if not action.enabled:
        return f"action {action.id!r} is disabled"
    target = states.get(action.to_state)
    if target is not None and not target.enabled:
        return f"state {action.to_state!r} is disabled"
    return None
