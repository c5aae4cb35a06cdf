"""The queue half of the SQL store: claiming, completing, leases and recovery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.commands import NEVER, ChildRun, Fork, Transition
from flowyard.domain.errors import Conflict, NotFound, StoreRejected
from flowyard.domain.ids import RunId, StepId
from flowyard.domain.records import RunRecord, SignalRecord, StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.base import SqlBase
from flowyard.store.flow import FlowWriter, ancestors, load_branch_results, signal_record
from flowyard.store.ports import CompletionResult, RunState, StepCompletion
from flowyard.store.rows import (
    ACTIVE,
    CLAIMABLE,
    LEASED,
    PENDING,
    chunks,
    event_row,
    log,
    run_record,
    step_record,
)
from flowyard.store.schema import branches, run_events, runs, signals, steps

_FINISHED = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)
_UNFINISHED_RESULTS = (StepStatus.RETRYING, StepStatus.WAITING, StepStatus.SCHEDULED)


class QueueOps(SqlBase):
    """Claim due steps, apply completions, extend/release leases, recover expired ones."""

    # -- queue -----------------------------------------------------------------------------

    async def claim_steps(
        self, worker_id: str, *, limit: int, now: datetime, lease_s: float
    ) -> list[StepRecord]:
        """Claim due steps: one UPDATE over a locked, skip-locked sub-select."""
        due = (
            sa.select(steps.c.id)
            .where(CLAIMABLE, steps.c.available_at <= now)
            .order_by(steps.c.available_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
            steps.update()
            .where(steps.c.id.in_(due.scalar_subquery()))
            .values(
                status=StepStatus.RUNNING.value,
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempt=steps.c.attempt + 1,
                claims=steps.c.claims + 1,
                started_at=now,
            )
            .returning(*steps.c)
        )

        async def fn(conn: AsyncConnection) -> list[StepRecord]:
            claimed = [step_record(row) for row in await conn.execute(claim)]
            if not claimed:
                return []
            await self._mark_runs_started(
                conn,
                {s.run_id for s in claimed},
                {s.run_id for s in claimed if s.waiting_for is not None},
                now,
            )
            await conn.execute(
                run_events.insert(),
                [
                    event_row(
                        s.run_id,
                        "step.started",
                        {"node_id": s.node_id, "attempt": s.attempt, "worker": worker_id},
                        now,
                        step_id=s.id,
                    )
                    for s in claimed
                ],
            )
            return claimed

        return await self._tx(fn)

    async def _mark_runs_started(
        self, conn: AsyncConnection, run_ids: set[RunId], woken: set[RunId], now: datetime
    ) -> None:
        """Pending runs start (with their event); waiting runs whose step woke run again."""
        # SKIP LOCKED: a run row locked by a completion is left alone (the completion marks it
        # running itself), so a claim never waits on a run lock and cannot deadlock.
        pending = (
            sa.select(runs.c.id)
            .where(runs.c.id.in_(sorted(run_ids)), runs.c.status == RunStatus.PENDING.value)
            .with_for_update(skip_locked=True, key_share=True)
        )
        started = await conn.execute(
            runs.update()
            .where(runs.c.id.in_(pending.scalar_subquery()))
            .values(status=RunStatus.RUNNING.value, started_at=now, updated_at=now)
            .returning(runs.c.id)
        )
        ids = [row.id for row in started]
        if ids:
            await conn.execute(
                run_events.insert(), [event_row(run_id, "run.started", {}, now) for run_id in ids]
            )
        if woken:
            waiting = (
                sa.select(runs.c.id)
                .where(runs.c.id.in_(sorted(woken)), runs.c.status == RunStatus.WAITING.value)
                .with_for_update(skip_locked=True, key_share=True)
            )
            await conn.execute(
                runs.update()
                .where(runs.c.id.in_(waiting.scalar_subquery()))
                .values(status=RunStatus.RUNNING.value, updated_at=now)
            )

    async def load_run_states(
        self, claimed: Sequence[StepRecord]
    ) -> dict[tuple[RunId, str], RunState]:
        """Runs and, per branch, the latest finished execution of each node visible from it.

        A fixed number of queries per 500 runs: runs, their steps on the branches in view,
        and only when needed the map items, buffered signals (for steps that wait for one)
        and fork results (for woken fork steps)."""
        wanted: dict[RunId, set[str]] = {}
        for step in claimed:
            wanted.setdefault(step.run_id, set()).add(step.branch)
        woken = [s.id for s in claimed if s.waiting_for in ("branches", "child")]
        listening = {
            s.run_id
            for s in claimed
            if s.node_type in SIGNAL_NODE_TYPES or (s.waiting_for or "").startswith("signal:")
        }

        async def fn(conn: AsyncConnection) -> dict[tuple[RunId, str], RunState]:
            states: dict[tuple[RunId, str], RunState] = {}
            for chunk in chunks(sorted(wanted), 500):
                found = {
                    RunId(row.id): run_record(row)
                    for row in await conn.execute(sa.select(runs).where(runs.c.id.in_(chunk)))
                }
                pending = await _pending_signals(conn, [r for r in found if r in listening])
                for run_id, run in found.items():
                    for branch in wanted[run_id]:
                        states[(run_id, branch)] = RunState(
                            run, branch=branch, signals=pending.get(run_id, [])
                        )
                await _load_steps(conn, [s for k, s in states.items() if k[0] in found])
            if woken:
                results = await load_branch_results(conn, woken)
                for step in claimed:
                    state = states.get((step.run_id, step.branch))
                    if state is not None and step.id in results:
                        state.children[step.id] = results[step.id]
            return states

        return await self._tx(fn, write=False)

    async def complete_steps(
        self, completions: Sequence[StepCompletion], now: datetime
    ) -> CompletionResult:
        """Record step results, schedule what follows and settle runs: one transaction, and a
        fixed number of statements however large the batch (the write lock is held briefly)."""
        if not completions:
            return CompletionResult([])

        async def fn(conn: AsyncConnection) -> CompletionResult:
            return await _BatchCompletion(self, conn, completions, now).apply()

        try:
            return await self._tx(fn)
        except (DataError, IntegrityError, StatementError) as exc:
            if isinstance(exc, OperationalError | InterfaceError):
                raise
            # Not a connection problem: the data of a result cannot be stored as it is.
            raise StoreRejected(f"the database refused the batch: {exc}") from exc

    async def apply_action(
        self, step: StepRecord, transition: Transition, *, actor: str, now: datetime
    ) -> RunRecord:
        """Move a run out of the state it waits in (``step``): in one transaction, take the
        waiting step as if claimed (only if it is still waiting, unchanged: of two
        concurrent actions exactly one wins, the other gets Conflict) and complete it."""

        async def fn(conn: AsyncConnection) -> RunRecord:
            row = (
                await conn.execute(
                    sa.select(runs.c.status)
                    .where(runs.c.id == step.run_id)
                    .with_for_update(key_share=True)
                )
            ).first()
            if row is None:
                raise NotFound(f"run {step.run_id!r} not found")
            taken = (
                await conn.execute(
                    steps.update()
                    .where(
                        steps.c.id == step.id,
                        steps.c.status == StepStatus.WAITING.value,
                        steps.c.claims == step.claims,
                        steps.c.held == sa.false(),
                    )
                    .values(
                        status=StepStatus.RUNNING.value,
                        claims=steps.c.claims + 1,
                        attempt=steps.c.attempt + 1,
                        lease_owner=actor[:100],
                        lease_expires_at=now,
                        started_at=now,
                    )
                    .returning(*steps.c)
                )
            ).first()
            if taken is None or RunStatus(row.status).is_terminal:
                raise Conflict(
                    f"run {step.run_id} has moved on meanwhile (another action won, or it was "
                    "paused or ended); list its actions again",
                    detail={"state": step.node_id},
                )
            completion = StepCompletion(step_record(taken), transition)
            await _BatchCompletion(self, conn, [completion], now, actor).apply()
            return run_record(
                (await conn.execute(sa.select(runs).where(runs.c.id == step.run_id))).one()
            )

        return await self._tx(fn)

    async def extend_leases(
        self, worker_id: str, held: Sequence[StepRecord], *, now: datetime, lease_s: float
    ) -> set[StepId]:
        """Heartbeat: extend the leases of steps still held; returns their ids. A step missing
        from the answer was lost (cancelled, or recovered by another worker): stop it."""
        if not held:
            return set()
        claims = {step.id: step.claims for step in held}

        async def fn(conn: AsyncConnection) -> set[StepId]:
            kept: set[StepId] = set()
            for chunk in chunks(sorted(claims), 500):
                rows = await conn.execute(
                    steps.update()
                    .where(steps.c.id.in_(chunk), steps.c.lease_owner == worker_id, LEASED)
                    .values(lease_expires_at=now + timedelta(seconds=lease_s))
                    .returning(steps.c.id, steps.c.claims)
                )
                kept.update(StepId(r.id) for r in rows if claims.get(StepId(r.id)) == r.claims)
            return kept

        return await self._tx(fn)

    async def release_steps(self, worker_id: str, held: Sequence[StepRecord], now: datetime) -> int:
        """Put claimed steps back; the interrupted attempt is not counted."""
        if not held:
            return 0

        async def fn(conn: AsyncConnection) -> int:
            total = 0
            paused = await self._lock_runs_paused(conn, {step.run_id for step in held})
            for step in held:
                result = await conn.execute(
                    steps.update()
                    .where(
                        steps.c.id == step.id,
                        steps.c.claims == step.claims,
                        steps.c.lease_owner == worker_id,
                        LEASED,
                    )
                    .values(
                        status=StepStatus.SCHEDULED.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        attempt=steps.c.attempt - 1,
                        available_at=now,
                        held=step.run_id in paused,  # a paused run keeps it until resumed
                    )
                )
                if result.rowcount:
                    total += 1
                    await conn.execute(
                        run_events.insert().values(
                            **event_row(
                                step.run_id,
                                "step.released",
                                {"node_id": step.node_id, "worker": worker_id},
                                now,
                                step_id=step.id,
                            )
                        )
                    )
            return total

        return await self._tx(fn)

    async def recover_expired(
        self, worker_id: str, *, now: datetime, max_recoveries: int, lease_s: float
    ) -> tuple[int, list[StepRecord]]:
        """Requeue expired leases; hand poison steps (too many recoveries) to the caller."""
        expired = sa.and_(LEASED, steps.c.lease_expires_at < now)

        async def fn(conn: AsyncConnection) -> tuple[int, list[StepRecord]]:
            run_ids = await conn.execute(sa.select(steps.c.run_id).where(expired).distinct())
            paused = await self._lock_runs_paused(conn, {row.run_id for row in run_ids})
            poison = [
                step_record(row)
                for row in await conn.execute(
                    steps.update()
                    .where(expired, steps.c.recoveries >= max_recoveries)
                    .values(
                        lease_owner=worker_id,
                        lease_expires_at=now + timedelta(seconds=lease_s),
                        claims=steps.c.claims + 1,
                    )
                    .returning(*steps.c)
                )
            ]
            requeued = list(
                await conn.execute(
                    steps.update()
                    .where(expired)
                    .values(
                        status=StepStatus.SCHEDULED.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        available_at=now,
                        recoveries=steps.c.recoveries + 1,
                        # A step of a paused run is requeued held: it waits for the resume.
                        held=steps.c.run_id.in_(sorted(paused)),
                    )
                    .returning(steps.c.id, steps.c.run_id, steps.c.node_id, steps.c.lease_owner)
                )
            )
            if requeued:
                await conn.execute(
                    run_events.insert(),
                    [
                        event_row(
                            row.run_id,
                            "step.recovered",
                            {"node_id": row.node_id, "reason": "lease expired"},
                            now,
                            step_id=row.id,
                        )
                        for row in requeued
                    ],
                )
            return len(requeued), poison

        return await self._tx(fn)

    @staticmethod
    async def _lock_runs_paused(conn: AsyncConnection, run_ids: set[str]) -> set[str]:
        """Lock the runs (in id order, like every writer: run rows before step rows) and
        return those that are paused: a step put back in the queue for them must be held."""
        paused: set[str] = set()
        for chunk in chunks(sorted(run_ids), 500):
            rows = await conn.execute(
                sa.select(runs.c.id, runs.c.status)
                .where(runs.c.id.in_(chunk))
                .order_by(runs.c.id)
                .with_for_update(key_share=True)
            )
            paused.update(row.id for row in rows if row.status == RunStatus.PAUSED.value)
        return paused

    async def queue_depth(self) -> dict[str, int]:
        """Step counts by status."""

        async def fn(conn: AsyncConnection) -> dict[str, int]:
            rows = await conn.execute(
                sa.select(steps.c.status, sa.func.count()).group_by(steps.c.status)
            )
            return {row[0]: int(row[1]) for row in rows}

        return await self._tx(fn, write=False)


#: Node types that read the run's buffered signals on their first execution.
SIGNAL_NODE_TYPES = frozenset({"wait_for_signal"})


async def _pending_signals(
    conn: AsyncConnection, run_ids: Sequence[RunId]
) -> dict[RunId, list[SignalRecord]]:
    pending: dict[RunId, list[SignalRecord]] = {}
    if not run_ids:
        return pending
    rows = await conn.execute(
        sa.select(signals)
        .where(signals.c.run_id.in_(run_ids), signals.c.consumed_at.is_(None))
        .order_by(signals.c.id)
    )
    for row in rows:
        pending.setdefault(RunId(row.run_id), []).append(signal_record(row))
    return pending


async def _load_steps(conn: AsyncConnection, states: Sequence[RunState]) -> None:
    """Fill each state with the finished steps of its branch and the enclosing ones, and
    the item of its innermost map branch. One query for all the runs: branch keys below
    the main path hold a step id, so each names one run only."""
    visible: dict[tuple[str, str], list[RunState]] = {}
    for state in states:
        for key in ancestors(state.branch):
            visible.setdefault((state.run.id, key), []).append(state)
    if not visible:
        return
    run_ids = sorted({run_id for run_id, _ in visible})
    keys = sorted({key for _, key in visible})
    rows = await conn.execute(
        sa.select(
            steps.c.run_id,
            steps.c.node_id,
            steps.c.iteration,
            steps.c.status,
            steps.c.output,
            steps.c.error,
            steps.c.branch,
        )
        .where(steps.c.run_id.in_(run_ids), steps.c.branch.in_(keys))
        .order_by(steps.c.id)
    )
    for row in rows:
        for state in visible.get((row.run_id, row.branch), ()):
            previous = state.iterations.get(row.node_id, -1)
            state.iterations[row.node_id] = max(previous, row.iteration)
            if row.status in _FINISHED:
                state.steps[row.node_id] = {
                    "output": row.output,
                    "error": row.error,
                    "status": row.status,
                    "iteration": row.iteration,
                }
    inner = [k for k in keys if k]
    if not inner:
        return
    items = {
        (row.run_id, row.key): row
        for row in await conn.execute(
            sa.select(branches.c.run_id, branches.c.key, branches.c.idx, branches.c.item).where(
                branches.c.run_id.in_(run_ids), branches.c.key.in_(inner), branches.c.kind == "map"
            )
        )
    }
    for state in states:
        for key in reversed(ancestors(state.branch)):  # the innermost map branch wins
            item = items.get((state.run.id, key))
            if item is not None:
                state.item, state.index = item.item, item.idx
                break


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


class _BatchCompletion:
    """Applies a batch of completions with set-based statements.

    Order of work: lock the runs (sorted, like every writer: run rows before step rows),
    read the steps' claim tokens, decide per completion in batch order, then write: step
    results, next steps, forks and child runs, branch results and joins, cancellations of
    failed runs, run settlements, events.
    """

    def __init__(
        self,
        ops: QueueOps,
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
        self.flow = FlowWriter(ops, conn, now, self.events)
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
            {c.transition.consume_signal for c in self.completions} - {None}  # type: ignore[type-var]
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
