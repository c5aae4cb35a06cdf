"""Check a states/actions definition and compile it to the graph form.

Each state becomes a ``state`` node (it parks the run until an action moves it; a final
state ends the run) preceded by its ``on_enter`` nodes, chained in order and named
``<state>__<node>``. An action listed from a state routes that state's node to the entry of
``to_state``. Problems point into the states/actions form, not into the compiled graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flowyard.domain.definition import NODE_ID_PATTERN
from flowyard.domain.errors import Problem
from flowyard.domain.state_machine import StateMachineDefinition, StateSpec

_NODE_ID = re.compile(NODE_ID_PATTERN)
SEPARATOR = "__"


@dataclass(slots=True)
class CompiledStateMachine:
    """The graph form, and where each of its nodes came from (for problem pointers)."""

    graph: dict[str, Any] | None
    problems: list[Problem]
    origins: list[tuple[str, bool]]  # per graph node: (pointer, keep the node-relative rest)
    start_origin: str = ""

    def locate(self, problem: Problem) -> Problem:
        """Rewrite a graph pointer (``/nodes/3/config/x``) to the states/actions form."""
        pointer = problem.pointer
        if pointer == "/start" or pointer.startswith("/start/"):
            return Problem(self.start_origin, problem.message, problem.code)
        match = re.match(r"^/nodes/(\d+)(.*)$", pointer)
        if match and int(match.group(1)) < len(self.origins):
            origin, keep_rest = self.origins[int(match.group(1))]
            return Problem(
                origin + (match.group(2) if keep_rest else ""), problem.message, problem.code
            )
        return problem


def entry_of(state: StateSpec) -> str:
    """The first node a run executes when it enters ``state``."""
    return f"{state.id}{SEPARATOR}{state.on_enter[0].id}" if state.on_enter else state.id


def compile_state_machine(raw: dict[str, Any]) -> CompiledStateMachine:
    """Check the seed's rules and build the graph form."""
    try:
        sm = StateMachineDefinition.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(
                "".join(f"/{part}" for part in err["loc"] if not str(part).startswith("function")),
                err["msg"],
                str(err["type"]),
            )
            for err in exc.errors(include_url=False)
        ]
        return CompiledStateMachine(None, problems, [])
    problems = _check(sm)
    if problems:
        return CompiledStateMachine(None, problems, [])
    entries = {s.id: entry_of(s) for s in sm.states}
    nodes: list[dict[str, Any]] = []
    origins: list[tuple[str, bool]] = []
    initial = 0
    for i, state in enumerate(sm.states):
        if state.is_initial:
            initial = i
        chain = [f"{state.id}{SEPARATOR}{n.id}" for n in state.on_enter]
        for j, node in enumerate(state.on_enter):
            spec = node.model_dump(exclude_none=True)
            spec["id"] = chain[j]
            spec["next"] = chain[j + 1] if j + 1 < len(chain) else state.id
            spec.setdefault("max_iterations", sm.max_visits)
            nodes.append(spec)
            origins.append((f"/states/{i}/on_enter/{j}", True))
        actions = [
            {
                "id": action.id,
                "name": action.name or action.id,
                "to_state": action.to_state,
                "to": entries[action.to_state],
                "enabled": action.enabled,
            }
            for action in sm.actions
            if state.id in action.from_states
        ]
        nodes.append(
            {
                "id": state.id,
                "type": "state",
                "name": state.name or state.id,
                "config": {
                    "state": state.id,
                    "final": state.is_final,
                    "enabled": state.enabled,
                    "actions": actions,
                },
                "max_iterations": sm.max_visits,
            }
        )
        origins.append((f"/states/{i}", False))
    graph: dict[str, Any] = {
        "name": sm.name,
        "start": entries[sm.states[initial].id],
        "vars": sm.vars,
        "defaults": sm.defaults.model_dump(exclude_none=True),
        "nodes": nodes,
    }
    for key in ("description", "input_schema", "run_timeout_s", "retention", "signals"):
        if getattr(sm, key) is not None:
            graph[key] = getattr(sm, key)
    if sm.correlation is not None:
        graph["correlation"] = sm.correlation.model_dump(exclude_none=True)
    return CompiledStateMachine(graph, [], origins, f"/states/{initial}/is_initial")


def _check(sm: StateMachineDefinition) -> list[Problem]:
    """Exactly one initial state, unique ids, existing references, no way out of a final
    state, and compiled node ids that fit."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, state in enumerate(sm.states):
        if state.id in seen:
            problems.append(
                Problem(f"/states/{i}/id", f"duplicate state id {state.id!r}", "duplicate_id")
            )
        seen.setdefault(state.id, i)
        for j, node in enumerate(state.on_enter):
            compiled = f"{state.id}{SEPARATOR}{node.id}"
            if not _NODE_ID.match(compiled):
                problems.append(
                    Problem(
                        f"/states/{i}/on_enter/{j}/id",
                        f"{compiled!r} (state id + '{SEPARATOR}' + node id) is longer than 64",
                        "id_too_long",
                    )
                )
            if node.next is not None:
                problems.append(
                    Problem(
                        f"/states/{i}/on_enter/{j}/next",
                        "on_enter nodes run in order: 'next' is implied, leave it out",
                        "next_not_allowed",
                    )
                )
    initial = [i for i, s in enumerate(sm.states) if s.is_initial]
    if not initial:
        problems.append(
            Problem("/states", "exactly one state must be initial; none is", "initial_state")
        )
    for i in initial[1:]:
        problems.append(
            Problem(
                f"/states/{i}/is_initial",
                f"exactly one state must be initial; {sm.states[initial[0]].id!r} already is",
                "initial_state",
            )
        )
    for i in initial[:1]:
        if not sm.states[i].enabled:
            problems.append(
                Problem(f"/states/{i}/enabled", "the initial state cannot be disabled", "disabled")
            )
    return problems + _check_actions(sm)


def _check_actions(sm: StateMachineDefinition) -> list[Problem]:
    problems: list[Problem] = []
    states = {s.id: s for s in sm.states}
    actions: dict[str, int] = {}
    for i, action in enumerate(sm.actions):
        if action.id in actions:
            problems.append(
                Problem(f"/actions/{i}/id", f"duplicate action id {action.id!r}", "duplicate_id")
            )
        actions.setdefault(action.id, i)
        for j, source in enumerate(action.from_states):
            if source not in states:
                problems.append(
                    Problem(
                        f"/actions/{i}/from_states/{j}",
                        f"unknown state {source!r}",
                        "unknown_state",
                    )
                )
            elif states[source].is_final:
                problems.append(
                    Problem(
                        f"/actions/{i}/from_states/{j}",
                        f"state {source!r} is final: a final state has no outgoing actions",
                        "final_state_action",
                    )
                )
        if action.to_state not in states:
            problems.append(
                Problem(
                    f"/actions/{i}/to_state", f"unknown state {action.to_state!r}", "unknown_state"
                )
            )
    return problems
