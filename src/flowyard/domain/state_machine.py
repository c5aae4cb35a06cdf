"""The state-machine form of a definition: ``{"states": [...], "actions": [...]}``.

Runs of such a workflow sit in a state until a person (or a system) takes a named action;
the engine compiles this form to the graph form (one ``state`` node per state, plus the
state's ``on_enter`` nodes run on entry) so both forms share one executor.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from flowyard.domain.definition import (
    MAX_DECLARED_SIGNALS,
    NODE_ID_PATTERN,
    WORKFLOW_NAME_PATTERN,
    CorrelationSpec,
    NodeIdStr,
    NodeSpec,
    RetentionStr,
    SignalNameStr,
    WorkflowDefaults,
    _Strict,
)

ACTION_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"

#: The signal an action is delivered as (reserved: signal names sent over the API or waited
#: for by ``wait_for_signal`` cannot contain ``@``). Its payload is the move:
#: ``{from, to, action, by, at, payload}``; the run's state is the ``to`` of its last one.
ACTION_SIGNAL = "@action"


class StateSpec(_Strict):
    """One state. ``on_enter`` nodes run in order each time the run enters it."""

    id: NodeIdStr
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    is_initial: bool = False
    is_final: bool = False
    enabled: bool = Field(True, description="A disabled state cannot be entered.")
    on_enter: list[NodeSpec] = Field(
        default_factory=list,
        max_length=100,
        description="Automated nodes run on entry, in order (their 'next' is implied).",
    )


class ActionSpec(_Strict):
    """A named move from any of ``from_states`` to ``to_state``."""

    id: str = Field(pattern=ACTION_ID_PATTERN)
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    from_states: list[str] = Field(min_length=1, max_length=1000)
    to_state: str = Field(min_length=1, max_length=64)
    enabled: bool = Field(True, description="A disabled action is refused at run time.")


class StateMachineDefinition(_Strict):
    """A workflow written as states and actions."""

    name: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    description: str | None = Field(None, max_length=5000)
    input_schema: dict[str, Any] | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    defaults: WorkflowDefaults = Field(default_factory=WorkflowDefaults)
    run_timeout_s: float | None = Field(None, gt=0)
    retention: RetentionStr | None = None
    correlation: CorrelationSpec | None = None
    signals: list[SignalNameStr] | None = Field(None, max_length=MAX_DECLARED_SIGNALS)
    #: Loop guard per state: how many times a run may enter one state.
    max_visits: int = Field(1000, ge=1, le=100_000)
    states: list[StateSpec] = Field(min_length=1, max_length=1000)
    actions: list[ActionSpec] = Field(default_factory=list, max_length=10_000)


# -- the compiled form: the config of a ``state`` node -----------------------------------


class StateAction(_Strict):
    """An action leaving this state."""

    id: str = Field(pattern=ACTION_ID_PATTERN)
    name: str | None = None
    to_state: str
    to: NodeIdStr = Field(description="The first node run on entering to_state.")
    enabled: bool = True


class StateConfig(_Strict):
    """The state and the actions that may leave it."""

    state: str
    final: bool = False
    enabled: bool = True
    actions: list[StateAction] = Field(default_factory=list)

    def action(self, action_id: str) -> StateAction | None:
        """The action called ``action_id`` from this state, if any."""
        return next((a for a in self.actions if a.id == action_id), None)


def definition_json_schema() -> dict[str, Any]:
    """The JSON Schema of definitions, both forms (exported to
    ``schema/workflow.schema.json``): the graph form or the states/actions form."""
    from pydantic import TypeAdapter

    from flowyard.domain.definition import WorkflowDefinition

    schema = TypeAdapter(WorkflowDefinition | StateMachineDefinition).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://flowyard.dev/schema/workflow.schema.json"
    schema["title"] = "flowyard workflow definition"
    return schema


def is_state_machine(raw: object) -> bool:
    """True for a definition in the states/actions form."""
    return isinstance(raw, dict) and "states" in raw and "nodes" not in raw


__all__ = [
    "ACTION_ID_PATTERN",
    "ACTION_SIGNAL",
    "NODE_ID_PATTERN",
    "ActionSpec",
    "StateAction",
    "StateConfig",
    "StateMachineDefinition",
    "StateSpec",
    "definition_json_schema",
    "is_state_machine",
]
