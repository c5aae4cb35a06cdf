"""Applying a batch of step completions in one transaction: results, next steps, forks and
child runs, branch results and joins, run settlement and events, with a fixed number of
statements however large the batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.commands import StepCompletion, signal_wait
from flowyard.domain.ids import RunId
from flowyard.domain.priorities import INTERACTIVE, NO_LANE
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.engine.settlement import RunFacts, Settlement, StepWrite
from flowyard.store.base import SqlBase
from flowyard.store.claim import claim_of_runs, record_claims
from flowyard.store.forks import ForkWriter
from flowyard.store.ports import Claimed, ClaimRequest, CompletionResult
from flowyard.store.rows import ACTIVE, LEASED, PENDING, chunks, event_row, log, new_step_row
from flowyard.store.runstate import read_run_states
from flowyard.store.schema import run_events, runs, signals, steps

_STEP_UPDATE = (
    steps.update()
    .where(steps.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("b_status"),
        output=sa.bindparam("b_output", type_=steps.c.output.type),
        error=sa.bindparam("b_error", type_=steps.c.error.type),
        lease_owner=None,
        lease_expires_at=None,
        finished_at=sa.bindparam("b_finished_at", type_=steps.c.finished_at.type),
        available_at=sa.func.coalesce(
            sa.bindparam("b_available_at", type_=steps.c.available_at.type), steps.c.available_at
        ),
        held=sa.bindparam("b_held", type_=sa.Boolean()),
        wait_until=sa.bindparam("b_wait_until", type_=steps.c.wait_until.type),
        waiting_for=sa.bindparam("b_waiting_for", type_=steps.c.waiting_for.type),
        wait_data=sa.bindparam("b_wait_data", type_=steps.c.wait_data.type),
        attempt=steps.c.attempt + sa.bindparam("b_attempt_delta", type_=sa.Integer()),
    )
)

#: A run the batch did not lock has no new steps; should one appear, it is interactive.
_DEFAULT_LANE = (INTERACTIVE, NO_LANE)

_CONSUME_SIGNAL = (
    signals.update()
    .where(signals.c.id == sa.bindparam("b_id"), signals.c.consumed_at.is_(None))
    .values(
        consumed_at=sa.bindparam("b_at", type_=signals.c.consumed_at.type),
        step_id=sa.bindparam("b_step"),
    )
)


class BatchCompletion:
    """Records a batch of completions with set-based statements; the engine decides
    (:class:`~flowyard.engine.settlement.Settlement`).

    Order of work: lock the runs (sorted, like every writer: run rows before step rows),
    read the facts (the steps' claim tokens, open branches, free signals), let the engine
    decide, then write: step results, next steps, forks and child runs, branch results and
    joins, cancellations of failed runs, run settlements, events.
    """

    def __init__(
        self,
        ops: SqlBase,
        conn: AsyncConnection,
        completions: Sequence[StepCompletion],
        now: datetime,
        actor: str | None = None,
        *,
        chain: ClaimRequest | None = None,
    ) -> None:
        self.actor = actor
        self.chain = chain
        self.ops = ops
        self.conn = conn
        self.completions = completions
        self.now = now
        self.events: list[dict[str, Any]] = []
        self.forks = ForkWriter(ops, conn, now, self.events)
        #: Each locked run's priority and lane, which its new steps inherit.
        self.lanes: dict[str, tuple[int, str]] = {}

    async def apply(self) -> CompletionResult:
        """Write the batch; returns which completions were applied (False: stale) and the
        runs it ended."""
        plan = Settlement(self.now, await self._lock_runs(), self.actor)
        in_branches = {
            (str(c.step.run_id), c.step.branch) for c in self.completions if c.step.branch
        }
        plan.complete(
            self.completions,
            claims=await self._claim_tokens(),
            free_signals=await self._free_signals(),
            open_branches=await self.forks.open_branches(in_branches) if in_branches else set(),
        )
        stale = plan.applied.count(False)
        if stale:
            log.info("discarding %d stale completion(s) (lease lost)", stale)
        await self._write(plan)
        chained = await self._chain(plan)
        if self.events:
            await self.conn.execute(run_events.insert(), self.events)
        return CompletionResult(
            plan.applied, {RunId(r): status for r, status in plan.settled.items()}, chained
        )

    async def _chain(self, plan: Settlement) -> Claimed:
        """The steps this batch made due now in the runs the worker asked to continue,
        claimed for it with their states (decision 0039): the next step of a run starts
        without waiting for a claim pass. Runs that ended, failed or are paused have none."""
        chain = self.chain
        if chain is None or chain.limit <= 0 or not plan.new_steps:
            return Claimed()
        runs_due = {n.run_id for n in plan.new_steps if not n.held and n.available_at <= self.now}
        runs_due -= set(plan.settled) | set(plan.failed_runs)
        if chain.runs is not None:
            runs_due &= chain.runs
        claimed = await claim_of_runs(
            self.conn,
            chain.worker_id,
            sorted(runs_due),
            limit=chain.limit,
            now=self.now,
            lease_s=chain.lease_s,
        )
        if not claimed:
            return Claimed()
        await record_claims(
            self.conn, claimed, chain.worker_id, self.now, runs_started=True, events=self.events
        )
        return Claimed(claimed, await read_run_states(self.conn, claimed, chain.listening))

    async def _free_signals(self) -> set[int]:
        """Of the signals this batch takes, those still untaken (the run locks keep it so)."""
        wanted = sorted(
            {
                c.transition.consume_signal
                for c in self.completions
                if c.transition.consume_signal is not None
            }
        )
        if not wanted:
            return set()
        rows = await self.conn.execute(
            sa.select(signals.c.id).where(signals.c.id.in_(wanted), signals.c.consumed_at.is_(None))
        )
        return {row.id for row in rows}

    async def _lock_runs(self) -> dict[str, RunFacts]:
        facts: dict[str, RunFacts] = {}
        run_ids = sorted({c.step.run_id for c in self.completions})
        for chunk in chunks(run_ids, 500):
            rows = await self.conn.execute(
                sa.select(
                    runs.c.id, runs.c.status, runs.c.parent_run_id, runs.c.priority, runs.c.lane
                )
                .where(runs.c.id.in_(chunk))
                .order_by(runs.c.id)
                .with_for_update(key_share=True)
            )
            for row in rows:
                facts[row.id] = RunFacts(RunStatus(row.status), row.parent_run_id is not None)
                self.lanes[row.id] = (row.priority, row.lane)
        return facts

    async def _claim_tokens(self) -> dict[int, int]:
        """Claims count of each step still running (the run locks keep them stable)."""
        tokens: dict[int, int] = {}
        for chunk in chunks(sorted({c.step.id for c in self.completions}), 500):
            rows = await self.conn.execute(
                sa.select(steps.c.id, steps.c.claims).where(steps.c.id.in_(chunk), LEASED)
            )
            tokens.update({row.id: row.claims for row in rows})
        return tokens

    async def _busy(self, run_ids: Sequence[str]) -> set[str]:
        """Of these runs, those with a step due or running."""
        busy: set[str] = set()
        for chunk in chunks(run_ids, 500):
            rows = await self.conn.execute(
                sa.select(steps.c.run_id)
                .where(
                    steps.c.run_id.in_(chunk),
                    steps.c.status.in_(
                        [
                            StepStatus.SCHEDULED.value,
                            StepStatus.RETRYING.value,
                            StepStatus.RUNNING.value,
                        ]
                    ),
                )
                .distinct()
            )
            busy.update(row.run_id for row in rows)
        return busy

    async def _write_run_changes(self, plan: Settlement) -> None:
        """One statement per distinct set of columns (started / failed / succeeded runs)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for run_id, values in plan.take_run_changes().items():
            groups.setdefault(tuple(sorted(values)), []).append(
                {"b_run_id": run_id, **{f"b_{k}": v for k, v in values.items()}}
            )
        for columns, params in groups.items():
            stmt = (
                runs.update()
                .where(runs.c.id == sa.bindparam("b_run_id"))
                .values({c: sa.bindparam(f"b_{c}", type_=runs.c[c].type) for c in columns})
            )
            await self.conn.execute(stmt, params)

    async def _write(self, plan: Settlement) -> None:
        conn, now = self.conn, self.now
        if plan.step_writes:
            await conn.execute(_STEP_UPDATE, [_step_params(w) for w in plan.step_writes])
        if plan.consumed:
            await conn.execute(
                _CONSUME_SIGNAL,
                [{"b_id": sig, "b_at": now, "b_step": step} for sig, step in plan.consumed],
            )
        if plan.signal_waits:
            # A signal sent while the step ran (after it looked) finds no waiting step to
            # wake; sending locks the run like this transaction, so checking here closes it.
            await conn.execute(
                steps.update()
                .where(
                    steps.c.id.in_(sorted(plan.signal_waits)),
                    steps.c.status == StepStatus.WAITING.value,
                    sa.exists().where(
                        signals.c.run_id == steps.c.run_id,
                        sa.literal(signal_wait("")) + signals.c.name == steps.c.waiting_for,
                        signals.c.consumed_at.is_(None),
                    ),
                )
                .values(available_at=now)
            )
        if plan.new_steps:
            await conn.execute(
                self.ops._insert_ignore(steps),
                [
                    new_step_row(
                        n.run_id,
                        n.node_id,
                        n.node_type,
                        now,
                        priority=self.lanes.get(n.run_id, _DEFAULT_LANE)[0],
                        lane=self.lanes.get(n.run_id, _DEFAULT_LANE)[1],
                        branch=n.branch,
                        iteration=n.iteration,
                        available_at=n.available_at,
                        held=n.held,
                    )
                    for n in plan.new_steps
                ],
            )
        for parent, fork, paused in plan.forks:
            await self.forks.start_fork(parent, fork, paused)
        for parent, child in plan.children:
            await self.forks.start_child(parent, child, None)
        await self.forks.finish_branches(plan.branch_ends)
        if plan.failed_runs:
            await conn.execute(
                steps.update()
                .where(
                    steps.c.run_id.in_(sorted(plan.failed_runs)),
                    steps.c.status.in_(PENDING),
                )
                .values(status=StepStatus.CANCELLED.value, finished_at=now, held=False)
            )
        if plan.ended_paths:
            active = await conn.execute(
                sa.select(steps.c.run_id)
                .where(steps.c.run_id.in_(sorted(plan.ended_paths)), steps.c.status.in_(ACTIVE))
                .distinct()
            )
            plan.end_paths({row.run_id for row in active})
        await self._write_run_changes(plan)
        await self.forks.settle_children([r for r in plan.settled if plan.runs[r].is_child])
        await self.forks.flush()
        live, doubtful = plan.to_check(self.forks.started_runs)
        if live:
            plan.activity(live, await self._busy(doubtful))
        await self._write_run_changes(plan)
        self.events.extend(
            event_row(e.run_id, e.type, e.data, now, step_id=e.step_id, actor=e.actor)
            for e in plan.events
        )


def _step_params(w: StepWrite) -> dict[str, Any]:
    return {
        "b_id": w.step_id,
        "b_status": w.status.value,
        "b_output": w.output,
        "b_error": w.error,
        "b_finished_at": w.finished_at,
        "b_available_at": w.available_at,
        "b_held": w.held,
        "b_wait_until": w.wait_until,
        "b_waiting_for": w.waiting_for,
        "b_wait_data": w.wait_data,
        "b_attempt_delta": w.attempt_delta,
    }
