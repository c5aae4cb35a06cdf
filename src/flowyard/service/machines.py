"""State-machine use cases: where a run is, and actions that move it (decision 0018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import (
    Conflict,
)
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import (
    MoveFacts,
    MovePlan,
    RunRecord,
    SignalRecord,
)
from flowyard.domain.state_machine import ACTION_SIGNAL, StateConfig
from flowyard.domain.statuses import StepStatus
from flowyard.engine import actions
from flowyard.engine.actions import Position
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.service.base import ServiceBase


class StateMachineUseCases(ServiceBase):
    """Runs of state machines: read their position, take actions."""

    async def run_actions(self, run_id: str) -> ActionsView:
        """Where a state-machine run is, which actions it accepts now (each other action of
        that state under ``unavailable`` with the reason), and its latest moves."""
        run = await self.store.get_run(run_id)
        wf = await self.compiled(run.workflow_id, run.workflow_version)
        states = actions.state_nodes(wf)
        moves = await self.store.recent_signals(run.id, ACTION_SIGNAL, limit=MAX_HISTORY)
        state = actions.known_state(wf, states, moves[0] if moves else None)
        if state is None:  # a graph whose first state is a choice: where its step waits
            waiting = [
                s
                for s in await self.store.list_steps(run.id)
                if s.node_id in states and s.status == StepStatus.WAITING and not s.branch
            ]
            state = waiting[-1].node_id if waiting else None
        # Read again after the moves: a final state's step ends the run after its move.
        run = await self.store.get_run(run_id)
        where = actions.position(states, run.status, state)
        return ActionsView(run, where, actions.history(moves[::-1]))

    async def take_action(
        self,
        run_id: str,
        action_id: str,
        *,
        actor: str,
        payload: Any = None,
        audit: AuditEntry | None = None,
    ) -> ActionsView:
        """Move a state-machine run with a named action, in one transaction: it is in the
        target state when this returns, and the next action is accepted at once
        (``on_enter`` nodes run on workers, after). Refused (Conflict, with the reason): a
        disabled action or target state, an action not allowed from the current state, any
        action once the run is in a final state or ended, a paused run. Concurrent actions
        on one run are decided one after the other, each on the state the previous left."""
        now = self.clock()
        key = self._run_workflows.get(run_id)
        for _ in range(2):
            if key is None:
                run = await self.store.get_run(run_id)
                key = (run.workflow_id, run.workflow_version)
            wf = await self.compiled(*key)
            states = actions.state_nodes(wf)

            def decide(
                facts: MoveFacts,
                key: tuple[WorkflowId, int] = key,
                wf: CompiledWorkflow = wf,
                states: dict[str, StateConfig] = states,
            ) -> MovePlan:
                if (facts.run.workflow_id, facts.run.workflow_version) != key:
                    raise _OtherVersion  # retried on another version since: decide again
                return actions.decide(
                    wf, states, facts, action_id, actor=actor, now=now, payload=payload
                )

            try:
                facts, recorded = await self.store.record_action(
                    run_id,
                    ACTION_SIGNAL,
                    decide,
                    actor=actor,
                    now=now,
                    history=MAX_HISTORY,
                    audit=audit,
                )
            except _OtherVersion:
                key = None
                continue
            self._run_workflows.put(run_id, key)
            self._enqueued()
            where = actions.position(states, facts.run.status, recorded.payload["to"])
            history = actions.history([*facts.moves[::-1], recorded][-MAX_HISTORY:])
            return ActionsView(facts.run, where, history, recorded)
        raise Conflict(f"run {run_id} changed version while moving; try again")


@dataclass(frozen=True, slots=True)
class ActionsView:
    """A state-machine run, where it is, and its moves (``recorded``: the move an action
    just made)."""

    run: RunRecord
    where: Position
    history: list[dict[str, Any]]
    recorded: SignalRecord | None = None


#: How many moves a state-machine run lists (its latest).
MAX_HISTORY = 1000


class _OtherVersion(Exception):
    """The run is on another workflow version than the one an action was decided with."""
