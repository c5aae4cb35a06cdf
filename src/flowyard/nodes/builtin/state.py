"""The ``state`` node type: one state of a state machine (see
``flowyard.engine.state_machine``). It parks the run until an action moves it on
(``POST /runs/{id}/actions/{action}``); a final state ends the run."""

from __future__ import annotations

from pydantic import Field

from flowyard.domain.commands import Wait
from flowyard.domain.definition import NodeIdStr
from flowyard.domain.state_machine import ACTION_ID_PATTERN
from flowyard.nodes.base import NodeConfig, NodeOutcome, NodeType, Route, StepContext


class StateAction(NodeConfig):
    """An action leaving this state."""

    id: str = Field(pattern=ACTION_ID_PATTERN)
    name: str | None = None
    to_state: str
    to: NodeIdStr = Field(description="The first node run on entering to_state.")
    enabled: bool = True


class StateConfig(NodeConfig):
    """The state and the actions that may leave it."""

    state: str
    final: bool = False
    enabled: bool = True
    actions: list[StateAction] = Field(default_factory=list)

    def action(self, action_id: str) -> StateAction | None:
        """The action called ``action_id`` from this state, if any."""
        return next((a for a in self.actions if a.id == action_id), None)


class StateNode(NodeType[StateConfig]):
    """Wait in a state for an action; output ``{state}``. A final state ends the run."""

    type_name = "state"
    config_model = StateConfig
    description = "A state-machine state: waits for a named action; a final state ends the run."
    branching = True

    def routes(self, config: StateConfig) -> list[Route]:
        """Where each action leads."""
        return [Route(f"/config/actions/{i}/to", a.to) for i, a in enumerate(config.actions)]

    async def execute(self, ctx: StepContext, config: StateConfig) -> NodeOutcome:
        """Enter the state: end the run if final, else wait for an action."""
        if config.final:
            return NodeOutcome(output={"state": config.state, "final": True}, end=True)
        return NodeOutcome(wait=Wait(None, "action", {"state": config.state}))
