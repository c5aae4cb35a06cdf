"""The ``state`` node type: one state of a state machine (see
``flowyard.engine.state_machine``). A final state ends the run; any other takes the action
recorded for it, or parks until one is.

An action takes effect when ``POST /runs/{id}/actions/{action}`` answers: the service
records it as the ``@action`` signal (the run's state is the target of its last one). The
state's step follows it when it gets there, so ``on_enter`` nodes still run on workers,
after, and actions taken meanwhile wait in order (docs/decisions/0018)."""

from __future__ import annotations

from flowyard.domain.commands import Wait, signal_wait
from flowyard.domain.errors import PermanentError
from flowyard.domain.state_machine import ACTION_SIGNAL, StateConfig
from flowyard.nodes.base import NodeOutcome, NodeType, Route, StepContext

#: What a state step waits for: its run's next ``@action`` signal.
WAITING_FOR_ACTION = signal_wait(ACTION_SIGNAL)


class StateNode(NodeType[StateConfig]):
    """Follow the action taken in this state (output: the move), or wait for one. A final
    state ends the run (output ``{state, final}``)."""

    type_name = "state"
    config_model = StateConfig
    description = "A state-machine state: waits for a named action; a final state ends the run."
    branching = True
    listens_for_signals = True

    def routes(self, config: StateConfig) -> list[Route]:
        """Where each action leads."""
        return [
            Route(f"/config/actions/{i}/to", a.to, a.name or a.id)
            for i, a in enumerate(config.actions)
        ]

    async def execute(self, ctx: StepContext, config: StateConfig) -> NodeOutcome:
        """Enter the state: end the run if final; else take the oldest action not yet
        followed (it must leave this state), or wait for one."""
        if config.final:
            return NodeOutcome(output={"state": config.state, "final": True}, end=True)
        move = next((s for s in ctx.signals if s.name == ACTION_SIGNAL), None)
        if move is None:
            return NodeOutcome(wait=Wait(None, WAITING_FOR_ACTION, {"state": config.state}))
        taken = move.payload if isinstance(move.payload, dict) else {}
        action = config.action(str(taken.get("action")))
        if taken.get("from") != ctx.node_id or action is None:
            raise PermanentError(
                f"the action {taken.get('action')!r} was taken in state {taken.get('from')!r}, "
                f"but the run entered {ctx.node_id!r} (an error route or a condition led "
                "elsewhere)",
                error_type="state.diverged",
                details={"action": taken.get("action"), "from": taken.get("from")},
            )
        return NodeOutcome(
            output={
                "state": ctx.node_id,
                "action": action.id,
                "to_state": action.to_state,
                "by": taken.get("by"),
                "at": taken.get("at"),
                "payload": taken.get("payload"),
            },
            next=action.to,
            consume_signal=move.id,
        )
