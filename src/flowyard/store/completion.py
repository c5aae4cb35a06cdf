"""Applying a batch of step completions in one transaction: results, next steps, forks and
child runs, branch results and joins, run settlement and events, with a fixed number of
statements however large the batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.commands import NEVER, ChildRun, Fork, Transition
from flowyard.domain.ids import RunId
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.base import SqlBase
from flowyard.store.forks import ForkWriter
from flowyard.store.ports import CompletionResult, StepCompletion
from flowyard.store.rows import (
    ACTIVE,
    LEASED,
    PENDING,
    chunks,
    event_row,
    log,
)
from flowyard.store.schema import run_events, runs, signals, steps

_UNFINISHED_RESULTS = (StepStatus.RETRYING, StepStatus.WAITING, StepStatus.SCHEDULED)


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
    )
)

_CONSUME_SIGNAL = (
    signals.update()
    .where(signals.c.id == sa.bindparam("b_id"), signals.c.consumed_at.is_(None))
    .values(
        consumed_at=sa.bindparam("b_at", type_=signals.c.consumed_at.type),
        step_id=sa.bindparam("b_step"),
    )
)


def _again(step: StepRecord, reason: str) -> Transition:
    """Run the step again now (not counted as a failure): what it decided is void."""
    return Transition(
        StepStatus.SCHEDULED,
        event=("step.rescheduled", {"node_id": step.node_id, "reason": reason}),
    )


class BatchCompletion:
    """Applies a batch of completions with set-based statements.

    Order of work: lock the runs (sorted, like every writer: run rows before step rows),
    read the steps' claim tokens, decide per completion in batch order, then write: step
    results, next steps, forks and child runs, branch results and joins, cancellations of
    failed runs, run settlements, events.
    """

    def __init__(
        self,
        ops: SqlBase,
        conn: AsyncConnection,
        completions: Sequence[StepCompletion],
        now: datetime,
        actor: str | None = None,
    ) -> None:
        self.actor = actor
        self.ops = ops
        self.conn = conn
        self.completions = completions
        self.now = now
        self.step_rows: list[dict[str, Any]] = []
        self.next_rows: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.run_updates: dict[str, dict[str, Any]] = {}
        self.failed_runs: set[str] = set()
        self.ended_paths: dict[str, Any] = {}  # run id -> output of the last path that ended
        self.consumed: list[dict[str, Any]] = []
        self.forks: list[tuple[StepRecord, Fork, bool]] = []
        self.children: list[tuple[StepRecord, ChildRun]] = []
        self.branch_results: list[tuple[str, str, str, Any, Any]] = []
        self.open: set[tuple[str, str]] = set()
        self.flow = ForkWriter(ops, conn, now, self.events)
        self.settled: dict[RunId, RunStatus] = {}
        self.children_runs: set[str] = set()  # runs of the batch that are child runs
        self.signal_waits: list[int] = []  # steps that parked waiting for a signal
        self.parked_runs: set[str] = set()  # a step parked (a timer, a signal, an action)
        self.busy_runs: set[str] = set()  # a step scheduled more work
        self.run_status: dict[str, str] = {}

    async def apply(self) -> CompletionResult:
        """Write the batch; returns which completions were applied (False: stale) and the
        runs it ended."""
        run_status = self.run_status = await self._lock_runs()
        tokens = await self._claim_tokens()
        in_branches = {
            (str(c.step.run_id), c.step.branch) for c in self.completions if c.step.branch
        }
        if in_branches:
            self.open = await self.flow.open_branches(in_branches)
        free = await self._free_signals()
        applied: list[bool] = []
        for completion in self.completions:
            step = completion.step
            if tokens.get(step.id) != step.claims:
                log.info("discarding stale completion of step %s (lease lost)", step.id)
                applied.append(False)
                continue
            tokens.pop(step.id)  # a duplicate inside the batch is stale too
            taken = completion.transition.consume_signal
            if taken is not None:
                if taken in free:
                    free.discard(taken)
                else:  # another step took that signal first: run this one again
                    completion = StepCompletion(step, _again(step, "its signal was taken"))
            self._decide(completion, run_status)
            applied.append(True)
        await self._write()
        return CompletionResult(applied, self.settled)

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

    async def _lock_runs(self) -> dict[str, str]:
        status: dict[str, str] = {}
        run_ids = sorted({c.step.run_id for c in self.completions})
        for chunk in chunks(run_ids, 500):
            rows = await self.conn.execute(
                sa.select(runs.c.id, runs.c.status, runs.c.parent_run_id)
                .where(runs.c.id.in_(chunk))
                .order_by(runs.c.id)
                .with_for_update(key_share=True)
            )
            for row in rows:
                status[row.id] = row.status
                if row.parent_run_id is not None:
                    self.children_runs.add(row.id)
        return status

    async def _claim_tokens(self) -> dict[int, int]:
        """Claims count of each step still running (the run locks keep them stable)."""
        tokens: dict[int, int] = {}
        for chunk in chunks(sorted({c.step.id for c in self.completions}), 500):
            rows = await self.conn.execute(
                sa.select(steps.c.id, steps.c.claims).where(steps.c.id.in_(chunk), LEASED)
            )
            tokens.update({row.id: row.claims for row in rows})
        return tokens

    def _step_row(self, step: StepRecord, tr: Transition, paused: bool) -> dict[str, Any]:
        wait = tr.wait
        parked = tr.step_status == StepStatus.WAITING
        wait_data: dict[str, Any] | None = step.wait_data
        if wait is not None:
            wait_data = dict(wait.data or {})
            if tr.fork is not None:
                wait_data["join"] = tr.fork.join.as_dict()
            elif tr.child is not None:
                wait_data["join"] = {"mode": "all"}
        return {
            "b_id": step.id,
            "b_status": tr.step_status.value,
            "b_output": tr.output,
            "b_error": tr.error.as_dict() if tr.error else None,
            "b_finished_at": None if tr.step_status in _UNFINISHED_RESULTS else self.now,
            "b_available_at": self.now
            if tr.step_status == StepStatus.SCHEDULED
            else ((wait.until or NEVER) if wait else None) or tr.retry_at,
            # A backoff or a wait that ends during a pause waits for the resume.
            "b_held": paused
            and (tr.retry_at is not None or parked or tr.step_status == StepStatus.SCHEDULED),
            "b_wait_until": wait.until if wait else step.wait_until,
            "b_waiting_for": wait.on if wait else step.waiting_for,
            "b_wait_data": wait_data,
        }

    def _decide(self, completion: StepCompletion, run_status: dict[str, str]) -> None:
        step, tr = completion.step, completion.transition
        now = self.now
        status = run_status[step.run_id]
        paused = status == RunStatus.PAUSED.value
        self.step_rows.append(self._step_row(step, tr, paused))
        if tr.consume_signal is not None:
            self.consumed.append({"b_id": tr.consume_signal, "b_at": now, "b_step": step.id})
        if status == RunStatus.PENDING.value:
            # The claim skipped this run (row locked meanwhile): start it here, with its event.
            run_status[step.run_id] = status = RunStatus.RUNNING.value
            self._update_run(step.run_id, status=status, started_at=step.started_at or now)
            self.events.append(event_row(step.run_id, "run.started", {}, now))
        self.events.append(
            event_row(step.run_id, tr.event[0], tr.event[1], now, step_id=step.id, actor=self.actor)
        )
        self.events.extend(
            event_row(step.run_id, kind, data, now, step_id=step.id, actor=self.actor)
            for kind, data in tr.extra_events
        )
        if RunStatus(status).is_terminal:
            return  # the run ended meanwhile (e.g. failed by another branch): the step only
        if step.branch and (step.run_id, step.branch) not in self.open:
            return  # its branch was cancelled (the fork is done): nothing follows
        self.next_rows.extend(
            {
                "run_id": step.run_id,
                "node_id": n.node_id,
                "node_type": n.node_type,
                "branch": step.branch,
                "iteration": n.iteration,
                "status": StepStatus.SCHEDULED.value,
                "attempt": 0,
                "priority": 0,
                "available_at": n.available_at,
                "claims": 0,
                "recoveries": 0,
                "held": paused,
                "created_at": now,
            }
            for n in tr.next_steps
        )
        if tr.fork is not None:
            self.forks.append((step, tr.fork, paused))
        if tr.child is not None:
            self.children.append((step, tr.child))
        if tr.wait is not None and tr.wait.on.startswith("signal:"):
            self.signal_waits.append(step.id)
        if tr.wait is not None and tr.fork is None and tr.child is None:
            self.parked_runs.add(step.run_id)
        if tr.next_steps or tr.fork is not None or tr.child is not None:
            self.busy_runs.add(step.run_id)
        if tr.fail_run is not None:
            error = tr.fail_run.as_dict()
            # Remember which step failed: retrying the run restarts from it.
            error["details"] = {**error["details"], "step_id": step.id, "node_id": step.node_id}
            if step.branch:
                self.branch_results.append((step.run_id, step.branch, "failed", None, error))
                self.events.append(
                    event_row(step.run_id, "branch.failed", {"branch": step.branch}, now)
                )
                return
            run_status[step.run_id] = RunStatus.FAILED.value
            self.failed_runs.add(step.run_id)
            self.ended_paths.pop(step.run_id, None)
            self._update_run(
                step.run_id,
                status=RunStatus.FAILED.value,
                error=error,
                error_type=tr.fail_run.type,
                finished_at=now,
            )
            self.events.append(event_row(step.run_id, "run.failed", {"error": error}, now))
        elif tr.path_ended:
            if step.branch:
                self.branch_results.append(
                    (step.run_id, step.branch, "succeeded", tr.run_output, None)
                )
            else:
                self.ended_paths[step.run_id] = tr.run_output

    async def _waiting_or_running(self) -> None:
        """A run is 'waiting' while every unfinished step of it is parked, else 'running'.
        Checked only for runs whose steps parked or scheduled work in this batch."""
        live = {
            r
            for r in self.parked_runs | self.busy_runs
            if self.run_status.get(r) in (RunStatus.RUNNING.value, RunStatus.WAITING.value)
        }
        if not live:
            return
        doubtful = sorted(live - self.busy_runs)  # parked only: look at the other steps
        busy = set(self.busy_runs & live)
        for chunk in chunks(doubtful, 500):
            rows = await self.conn.execute(
                sa.select(steps.c.run_id)
                .where(
                    steps.c.run_id.in_(chunk),
                    steps.c.status.in_(
                        [StepStatus.SCHEDULED.value, StepStatus.RETRYING.value, "running"]
                    ),
                )
                .distinct()
            )
            busy.update(row.run_id for row in rows)
        for run_id in live:
            wanted = RunStatus.RUNNING.value if run_id in busy else RunStatus.WAITING.value
            if self.run_status[run_id] != wanted:
                self.run_status[run_id] = wanted
                self._update_run(run_id, status=wanted)

    async def _write_run_updates(self) -> None:
        """One statement per distinct set of columns (started / failed / succeeded runs)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for run_id, values in self.run_updates.items():
            groups.setdefault(tuple(sorted(values)), []).append(
                {"b_run_id": run_id, **{f"b_{k}": v for k, v in values.items()}}
            )
        self.run_updates = {}
        for columns, params in groups.items():
            stmt = (
                runs.update()
                .where(runs.c.id == sa.bindparam("b_run_id"))
                .values({c: sa.bindparam(f"b_{c}", type_=runs.c[c].type) for c in columns})
            )
            await self.conn.execute(stmt, params)

    def _update_run(self, run_id: str, **values: Any) -> None:
        self.run_updates.setdefault(run_id, {}).update(values, updated_at=self.now)

    async def _write(self) -> None:
        conn, now = self.conn, self.now
        if self.step_rows:
            await conn.execute(_STEP_UPDATE, self.step_rows)
        if self.consumed:
            await conn.execute(_CONSUME_SIGNAL, self.consumed)
        if self.signal_waits:
            # A signal sent while the step ran (after it looked) finds no waiting step to
            # wake; sending locks the run like this transaction, so checking here closes it.
            await conn.execute(
                steps.update()
                .where(
                    steps.c.id.in_(sorted(self.signal_waits)),
                    steps.c.status == StepStatus.WAITING.value,
                    sa.exists().where(
                        signals.c.run_id == steps.c.run_id,
                        sa.literal("signal:") + signals.c.name == steps.c.waiting_for,
                        signals.c.consumed_at.is_(None),
                    ),
                )
                .values(available_at=now)
            )
        if self.next_rows:
            await conn.execute(self.ops._insert_ignore(steps), self.next_rows)
        for parent, fork, paused in self.forks:
            await self.flow.start_fork(parent, fork, paused)
        for parent, child in self.children:
            await self.flow.start_child(parent, child, None)
        await self.flow.finish_branches(self.branch_results)
        if self.failed_runs:
            await conn.execute(
                steps.update()
                .where(
                    steps.c.run_id.in_(sorted(self.failed_runs)),
                    steps.c.status.in_(PENDING),
                )
                .values(status=StepStatus.CANCELLED.value, finished_at=now, held=False)
            )
        self.settled.update((RunId(r), RunStatus.FAILED) for r in self.failed_runs)
        if self.ended_paths:
            active = await conn.execute(
                sa.select(steps.c.run_id)
                .where(steps.c.run_id.in_(sorted(self.ended_paths)), steps.c.status.in_(ACTIVE))
                .distinct()
            )
            still_active = {row.run_id for row in active}
            for run_id, output in self.ended_paths.items():
                if run_id not in still_active:
                    self.settled[RunId(run_id)] = RunStatus.SUCCEEDED
                    self._update_run(
                        run_id, status=RunStatus.SUCCEEDED.value, output=output, finished_at=now
                    )
                    self.events.append(event_row(run_id, "run.succeeded", {}, now))
        await self._write_run_updates()
        await self.flow.settle_children([r for r in self.settled if r in self.children_runs])
        await self.flow.flush()
        self.busy_runs |= self.flow.started_runs
        await self._waiting_or_running()
        await self._write_run_updates()
        if self.events:
            await conn.execute(run_events.insert(), self.events)
