"""Forks in the SQL store: parallel branches, map items, child runs, and the joins that wake
a waiting step when its branches are done.

A fork's branches are rows of ``branches``; the steps of branch ``key`` carry
``steps.branch = key``, where ``key = f"{parent.branch}/{parent.id}.{index}"``. So every
step and sub-branch under a fork shares the prefix ``f"{parent.branch}/{parent.id}."``:
cancelling what is left of a fork is one prefix match, however deep it nests.

Joins are decided here, in the transaction that records the branch result, with the
:class:`~flowyard.domain.commands.JoinPolicy` kept on the waiting step. Waking the parent
step makes it claimable; the node then reads the results (in branch order) and decides its
own outcome. Counting uses aggregates: a map over 10,000 items never loads its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.commands import JOINED_WAITS, ChildRun, Fork, JoinPolicy
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, new_run_id
from flowyard.domain.records import BranchResult, StepRecord
from flowyard.domain.statuses import OPEN_BRANCH_STATUSES, BranchStatus, RunStatus, StepStatus
from flowyard.engine.settlement import BranchEnd, child_result, decide_join
from flowyard.store.base import SqlBase
from flowyard.store.rows import ACTIVE, chunks, event_row, new_step_row
from flowyard.store.schema import branches, run_events, runs, steps

_RUNNING = BranchStatus.RUNNING.value
_PENDING = BranchStatus.PENDING.value
_OPEN = sorted(s.value for s in OPEN_BRANCH_STATUSES)
#: A fork this large refreshes the planner's statistics (PostgreSQL).
BULK_FORK = 1000


def branch_key(parent: StepRecord, index: int) -> str:
    """``steps.branch`` of the steps of the ``index``-th branch of ``parent``'s fork (by
    position, not name: keys stay short however long the names, see MAX_BRANCH_KEY)."""
    return f"{parent.branch}/{parent.id}.{index}"


def fork_prefix(branch: str, step_id: int) -> str:
    """What every branch key under the fork of step ``step_id`` starts with."""
    return f"{branch}/{step_id}."


def ancestors(branch: str) -> list[str]:
    """``branch`` and every enclosing branch, outermost ('' : the main path) first."""
    found = [""]
    pos = branch.find("/", 1)
    while pos != -1:
        found.append(branch[:pos])
        pos = branch.find("/", pos + 1)
    if branch:
        found.append(branch)
    return found


def under(column: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    """``column`` starts with ``prefix``, case-sensitively on every backend (SQLite's LIKE
    ignores ASCII case, and branch names "a" and "A" are different branches)."""
    return sa.func.substr(column, 1, len(prefix)) == prefix


@dataclass
class ForkWriter:
    """Fork, child-run and join writes of one transaction (a completion batch or a
    lifecycle operation). Collect, then :meth:`flush`."""

    ops: SqlBase
    conn: AsyncConnection
    now: datetime
    events: list[dict[str, Any]]

    def __post_init__(self) -> None:
        self.parents: set[int] = set()
        #: Runs whose joins started more branches (they have work due now).
        self.started_runs: set[str] = set()

    async def start_fork(self, parent: StepRecord, fork: Fork, held: bool) -> None:
        """Insert the branch rows and start the first ``max_concurrency`` of them."""
        limit = fork.join.max_concurrency or len(fork.branches)
        rows, first = [], []
        for idx, spec in enumerate(fork.branches):
            key = branch_key(parent, idx)
            started = idx < limit
            rows.append(
                {
                    "run_id": parent.run_id,
                    "key": key,
                    "parent_step_id": parent.id,
                    "kind": fork.kind,
                    "name": spec.name,
                    "idx": idx,
                    "item": spec.item,
                    "start_node": spec.start_node,
                    "start_type": spec.start_type,
                    "status": _RUNNING if started else _PENDING,
                    "output": None,
                    "error": None,
                    "child_run_id": None,
                    "created_at": self.now,
                    "finished_at": None,
                }
            )
            if started:
                first.append(
                    new_step_row(
                        parent.run_id,
                        spec.start_node,
                        spec.start_type,
                        self.now,
                        priority=parent.priority,
                        lane=parent.lane,
                        branch=key,
                        held=held,
                    )
                )
        for chunk in chunks(rows, 2000):
            await self.conn.execute(self.ops._insert_ignore(branches), list(chunk))
        for chunk in chunks(first, 2000):
            await self.conn.execute(self.ops._insert_ignore(steps), list(chunk))
        if len(rows) >= BULK_FORK:
            await self.ops._refresh_statistics(self.conn, ("branches", "steps"))

    async def start_child(self, parent: StepRecord, child: ChildRun, actor: str | None) -> None:
        """Create the child run (idempotent per parent step) and its branch row."""
        # The branch row names the child: one per fork of the step (a retried run drops the
        # old branch and starts a new child). No idempotency key: callers could take it.
        existing = (
            await self.conn.execute(
                sa.select(branches.c.child_run_id).where(
                    branches.c.run_id == parent.run_id,
                    branches.c.key == branch_key(parent, 0),
                )
            )
        ).scalar()
        run_id = existing or new_run_id()
        if existing is None:
            await self.conn.execute(
                runs.insert().values(
                    id=run_id,
                    workflow_id=child.workflow_id,
                    workflow_version=child.workflow_version,
                    status=RunStatus.PENDING.value,
                    input=child.input,
                    vars={},
                    parent_run_id=parent.run_id,
                    parent_step_id=parent.id,
                    deadline_at=child.deadline_at,
                    # A child is its parent's work: same priority, same lane (decision 0032).
                    priority=parent.priority,
                    lane=parent.lane,
                    created_at=self.now,
                    updated_at=self.now,
                )
            )
            await self.conn.execute(
                steps.insert().values(
                    **new_step_row(
                        run_id,
                        child.start_node,
                        child.start_type,
                        self.now,
                        priority=parent.priority,
                        lane=parent.lane,
                    )
                )
            )
            self.events.append(
                event_row(
                    run_id,
                    EventType.RUN_CREATED,
                    {
                        "workflow_version": child.workflow_version,
                        "parent_run_id": parent.run_id,
                        "parent_step_id": parent.id,
                    },
                    self.now,
                    actor=actor,
                )
            )
        await self.conn.execute(
            self.ops._insert_ignore(branches).values(
                run_id=parent.run_id,
                key=branch_key(parent, 0),
                parent_step_id=parent.id,
                kind="child",
                name="child",
                idx=0,
                start_node=child.start_node,
                start_type=child.start_type,
                status=_RUNNING,
                child_run_id=run_id,
                created_at=self.now,
            )
        )

    async def open_branches(self, run_keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (run, branch key) pairs are still running (and every enclosing
        branch too): steps of a closed branch finish without scheduling anything."""
        wanted: set[tuple[str, str]] = set()
        for run_id, key in run_keys:
            wanted.update((run_id, k) for k in ancestors(key) if k)
        is_open: set[tuple[str, str]] = set()
        by_run: dict[str, list[str]] = {}
        for run_id, key in wanted:
            by_run.setdefault(run_id, []).append(key)
        for run_id, keys in by_run.items():
            for chunk in chunks(sorted(keys), 500):
                rows = await self.conn.execute(
                    sa.select(branches.c.key).where(
                        branches.c.run_id == run_id,
                        branches.c.key.in_(chunk),
                        branches.c.status == _RUNNING,
                    )
                )
                is_open.update((run_id, row.key) for row in rows)
        return {
            (run_id, key)
            for run_id, key in run_keys
            if all((run_id, k) in is_open for k in ancestors(key) if k)
        }

    async def finish_branches(self, results: Sequence[BranchEnd]) -> None:
        """Record how branches ended; cancel what is left inside a failed one; their forks
        are evaluated at :meth:`flush`."""
        if not results:
            return
        await self.conn.execute(
            branches.update()
            .where(
                branches.c.run_id == sa.bindparam("b_run_id"),
                branches.c.key == sa.bindparam("b_key"),
                branches.c.status == _RUNNING,
            )
            .values(
                status=sa.bindparam("b_status"),
                output=sa.bindparam("b_output", type_=branches.c.output.type),
                error=sa.bindparam("b_error", type_=branches.c.error.type),
                finished_at=self.now,
            ),
            [
                {
                    "b_run_id": r.run_id,
                    "b_key": r.key,
                    "b_status": r.status.value,
                    "b_output": r.output,
                    "b_error": r.error,
                }
                for r in results
            ],
        )
        failed = [(r.run_id, r.key + "/") for r in results if r.status == BranchStatus.FAILED]
        if failed:
            await self._cancel_under_failed(failed)
        by_run: dict[str, list[str]] = {}
        for r in results:
            by_run.setdefault(r.run_id, []).append(r.key)
        for run_id, keys in by_run.items():
            for chunk in chunks(sorted(keys), 500):
                rows = await self.conn.execute(
                    sa.select(branches.c.parent_step_id).where(
                        branches.c.run_id == run_id, branches.c.key.in_(chunk)
                    )
                )
                self.parents.update(row.parent_step_id for row in rows)

    async def settle_children(self, run_ids: Sequence[str]) -> None:
        """Runs that just ended: if they are child runs, record them as their parent's
        branch results."""
        if not run_ids:
            return
        for chunk in chunks(sorted(set(run_ids)), 500):
            rows = await self.conn.execute(
                sa.select(runs.c.id, runs.c.status, runs.c.output, runs.c.error).where(
                    runs.c.id.in_(chunk), runs.c.parent_run_id.is_not(None)
                )
            )
            for row in rows:
                status, output, error = child_result(
                    row.id, RunStatus(row.status), row.output, row.error
                )
                updated = await self.conn.execute(
                    branches.update()
                    .where(branches.c.child_run_id == row.id, branches.c.status == _RUNNING)
                    .values(status=status.value, output=output, error=error, finished_at=self.now)
                    .returning(branches.c.parent_step_id)
                )
                self.parents.update(r.parent_step_id for r in updated)

    async def _cancel_under(self, run_id: str, prefix: str) -> None:
        """Cancel open branches and unfinished steps whose branch starts with ``prefix``.
        Running steps are cancelled too (like a cancelled run's): their worker's completion
        is discarded and its heartbeat stops them, so nothing of a closed branch keeps the
        run alive. Child runs of those branches are cancelled by
        :meth:`~flowyard.store.lifecycle.LifecycleOps.cancel_orphans`."""
        await self.conn.execute(
            branches.update()
            .where(
                branches.c.run_id == run_id,
                under(branches.c.key, prefix),
                branches.c.status.in_(_OPEN),
            )
            .values(status=BranchStatus.CANCELLED.value, finished_at=self.now)
        )
        await self.conn.execute(
            steps.update()
            .where(
                steps.c.run_id == run_id,
                under(steps.c.branch, prefix),
                steps.c.status.in_(ACTIVE),
            )
            .values(
                status=StepStatus.CANCELLED.value,
                finished_at=self.now,
                held=False,
                lease_owner=None,
                lease_expires_at=None,
            )
        )

    async def _cancel_under_failed(self, prefixes: list[tuple[str, str]]) -> None:
        """What nested forks left open under failed branches: one query to find whether any
        exists (usually none), then one cancellation per such branch."""
        for chunk in chunks(prefixes, 200):
            nested = await self.conn.execute(
                sa.select(branches.c.run_id, branches.c.key).where(
                    branches.c.status.in_(_OPEN),
                    sa.or_(
                        *(
                            sa.and_(branches.c.run_id == run_id, under(branches.c.key, prefix))
                            for run_id, prefix in chunk
                        )
                    ),
                )
            )
            open_under = {
                (row.run_id, prefix)
                for row in nested
                for r, prefix in chunk
                if row.run_id == r and row.key.startswith(prefix)
            }
            for run_id, prefix in sorted(open_under):
                await self._cancel_under(run_id, prefix)

    async def flush(self) -> None:
        """Evaluate the joins of every fork touched: wake done ones (cancelling what is
        left of them), start more branches of the others (``max_concurrency``)."""
        pending = sorted(self.parents)
        self.parents = set()
        for chunk in chunks(pending, 500):
            parents = {
                row.id: row
                for row in await self.conn.execute(
                    sa.select(
                        steps.c.id,
                        steps.c.run_id,
                        steps.c.branch,
                        steps.c.node_id,
                        steps.c.held,
                        steps.c.wait_data,
                        steps.c.priority,
                        steps.c.lane,
                    ).where(
                        steps.c.id.in_(chunk),
                        steps.c.status == StepStatus.WAITING.value,
                        steps.c.waiting_for.in_(JOINED_WAITS),
                    )
                )
            }
            if not parents:
                continue
            counts: dict[int, dict[str, int]] = {}
            for row in await self.conn.execute(
                sa.select(branches.c.parent_step_id, branches.c.status, sa.func.count())
                .where(branches.c.parent_step_id.in_(sorted(parents)))
                .group_by(branches.c.parent_step_id, branches.c.status)
            ):
                counts.setdefault(row[0], {})[row[1]] = int(row[2])
            for step_id, parent in parents.items():
                await self._join(parent, counts.get(step_id, {}))

    async def _join(self, parent: Any, counts: dict[str, int]) -> None:
        decision = decide_join(JoinPolicy.of((parent.wait_data or {}).get("join")), counts)
        if decision.wake:
            if decision.cancel_open:
                await self._cancel_under(parent.run_id, fork_prefix(parent.branch, parent.id))
            await self.conn.execute(
                steps.update()
                .where(steps.c.id == parent.id, steps.c.status == StepStatus.WAITING.value)
                .values(available_at=self.now)
            )
            self.events.append(
                event_row(
                    parent.run_id,
                    EventType.BRANCHES_JOINED,
                    {"node_id": parent.node_id, **(decision.event or {})},
                    self.now,
                    step_id=parent.id,
                )
            )
            return
        if not decision.start:
            return
        rows = list(
            await self.conn.execute(
                sa.select(branches.c.key, branches.c.start_node, branches.c.start_type)
                .where(branches.c.parent_step_id == parent.id, branches.c.status == _PENDING)
                .order_by(branches.c.idx)
                .limit(decision.start)
            )
        )
        self.started_runs.add(parent.run_id)
        await self.conn.execute(
            branches.update()
            .where(branches.c.run_id == parent.run_id, branches.c.key.in_([r.key for r in rows]))
            .values(status=_RUNNING)
        )
        await self.conn.execute(
            self.ops._insert_ignore(steps),
            [
                new_step_row(
                    parent.run_id,
                    r.start_node,
                    r.start_type,
                    self.now,
                    priority=parent.priority,
                    lane=parent.lane,
                    branch=r.key,
                    held=bool(parent.held),
                )
                for r in rows
            ],
        )


async def drop_fork(
    conn: AsyncConnection, run_id: str, branch: str, step_id: int, now: datetime
) -> None:
    """Forget the branches of a fork step that will run again: cancel its child runs that
    are still active, delete its branch rows and the steps under them."""
    prefix = fork_prefix(branch, step_id)
    under_steps = under(steps.c.branch, prefix)
    under_keys = under(branches.c.key, prefix)
    children = (
        (
            await conn.execute(
                sa.select(branches.c.child_run_id).where(
                    branches.c.run_id == run_id, under_keys, branches.c.child_run_id.is_not(None)
                )
            )
        )
        .scalars()
        .all()
    )
    if children:
        active = [s.value for s in RunStatus if not s.is_terminal]
        ended = (
            (
                await conn.execute(
                    runs.update()
                    .where(runs.c.id.in_(children), runs.c.status.in_(active))
                    .values(status=RunStatus.CANCELLED.value, finished_at=now, updated_at=now)
                    .returning(runs.c.id)
                )
            )
            .scalars()
            .all()
        )
        if ended:
            await conn.execute(cancel_steps_of(ended, now))
            await conn.execute(
                run_events.insert(),
                [
                    event_row(r, EventType.RUN_CANCELLED, {"reason": "its parent runs again"}, now)
                    for r in ended
                ],
            )
    await conn.execute(steps.delete().where(steps.c.run_id == run_id, under_steps))
    await conn.execute(branches.delete().where(branches.c.run_id == run_id, under_keys))


def cancel_steps_of(run_ids: Sequence[str], now: datetime) -> sa.Update:
    """Cancel every unfinished step of these runs, running ones too (their workers' results
    are then discarded and their heartbeats stop them), as a direct cancel does."""
    return (
        steps.update()
        .where(steps.c.run_id.in_(list(run_ids)), steps.c.status.in_(ACTIVE))
        .values(
            status=StepStatus.CANCELLED.value,
            finished_at=now,
            held=False,
            lease_owner=None,
            lease_expires_at=None,
        )
    )


async def load_branch_results(
    conn: AsyncConnection, step_ids: Sequence[int]
) -> dict[int, list[BranchResult]]:
    """How each branch of these fork steps ended, in branch order."""
    results: dict[int, list[BranchResult]] = {}
    for chunk in chunks(sorted(set(step_ids)), 100):
        rows = await conn.execute(
            sa.select(
                branches.c.parent_step_id,
                branches.c.name,
                branches.c.idx,
                branches.c.status,
                branches.c.output,
                branches.c.error,
                branches.c.child_run_id,
            )
            .where(branches.c.parent_step_id.in_(chunk))
            .order_by(branches.c.parent_step_id, branches.c.idx)
        )
        for row in rows:
            results.setdefault(row.parent_step_id, []).append(
                BranchResult(
                    row.name,
                    row.idx,
                    BranchStatus(row.status),
                    row.output,
                    row.error,
                    RunId(row.child_run_id) if row.child_run_id else None,
                )
            )
    return results
