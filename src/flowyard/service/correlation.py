"""Runs addressed by their correlation key instead of their id: the signals and state-machine
actions a reply, a webhook or a person sends knowing only the business key (a phone number,
an order id) of the run (decision 0024). A trigger delivering signals calls these."""

from __future__ import annotations

from typing import Any

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.records import RunRecord, SignalRecord
from flowyard.service.lifecycle import LifecycleUseCases, check_signal_name
from flowyard.service.machines import ActionsView, StateMachineUseCases

#: How many of the runs sharing a key a refusal names.
NAMED_RUNS = 10


class CorrelationUseCases(LifecycleUseCases, StateMachineUseCases):
    """Signals and actions addressed by workflow and correlation key."""

    async def find_correlated(self, workflow: str, key: str) -> RunRecord:
        """The one unfinished run of ``workflow`` (id or name) holding ``key``. NotFound
        when none does (or no such workflow); Conflict naming them when several do (the
        workflow does not declare its key unique: address one by its run id)."""
        record = await self.store.get_workflow(workflow)
        found = await self.store.unfinished_runs_by_key(record.id, key, limit=NAMED_RUNS)
        if not found:
            raise NotFound(
                f"no unfinished run of workflow {record.name!r} holds correlation key {key!r}"
            )
        if len(found) > 1:
            more = " or more" if len(found) == NAMED_RUNS else ""
            ids = [r.id for r in found]
            raise Conflict(
                f"{len(found)}{more} unfinished runs of workflow {record.name!r} hold "
                f"correlation key {key!r} ({', '.join(ids)}): the workflow does not make its "
                "key unique; address one run by its id",
                detail={"correlation_key": key, "run_ids": ids},
            )
        return found[0]

    async def signal_by_correlation(
        self,
        workflow: str,
        key: str,
        name: str,
        payload: Any,
        *,
        actor: str | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[SignalRecord, bool]:
        """Deliver the signal ``name`` to the unfinished run of ``workflow`` holding ``key``
        (see :meth:`find_correlated` and :meth:`send_signal`). Returns the signal and
        whether a waiting step woke."""
        check_signal_name(name)
        run = await self.find_correlated(workflow, key)
        return await self._deliver_signal(run, name, payload, actor=actor, audit=audit)

    async def action_by_correlation(
        self,
        workflow: str,
        key: str,
        action: str,
        *,
        actor: str,
        payload: Any = None,
        audit: AuditEntry | None = None,
    ) -> ActionsView:
        """Take a state-machine action on the unfinished run of ``workflow`` holding
        ``key`` (see :meth:`find_correlated` and :meth:`take_action`)."""
        run = await self.find_correlated(workflow, key)
        return await self.take_action(run.id, action, actor=actor, payload=payload, audit=audit)
