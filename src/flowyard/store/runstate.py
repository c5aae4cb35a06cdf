"""What a worker needs to execute claimed steps: each run and, per branch, the latest
finished execution of each node visible from it, the map item, buffered signals and fork
results. Read in the transaction that claims the steps."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.commands import JOINED_WAITS, waited_signal
from flowyard.domain.ids import RunId
from flowyard.domain.records import SignalRecord, StepRecord
from flowyard.domain.statuses import StepStatus
from flowyard.store.forks import ancestors, load_branch_results
from flowyard.store.ports import RunState
from flowyard.store.rows import chunks, run_record
from flowyard.store.schema import branches, runs, signals, steps
from flowyard.store.signals import signal_record

_FINISHED = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)


async def read_run_states(
    conn: AsyncConnection, claimed: Sequence[StepRecord], listening: Collection[str]
) -> dict[tuple[RunId, str], RunState]:
    """Runs and, per branch, the latest finished execution of each node visible from it.

    A fixed number of queries per 500 runs: runs, their steps on the branches in view,
    and only when needed the map items, buffered signals (for steps of the node types
    ``listening`` names, and steps that wait for a signal) and fork results (for woken
    fork steps)."""
    wanted: dict[RunId, set[str]] = {}
    for step in claimed:
        wanted.setdefault(step.run_id, set()).add(step.branch)
    woken = [s.id for s in claimed if s.waiting_for in JOINED_WAITS]
    listeners = {
        s.run_id
        for s in claimed
        if s.node_type in listening or waited_signal(s.waiting_for) is not None
    }
    states: dict[tuple[RunId, str], RunState] = {}
    for chunk in chunks(sorted(wanted), 500):
        found = {
            RunId(row.id): run_record(row)
            for row in await conn.execute(sa.select(runs).where(runs.c.id.in_(chunk)))
        }
        pending = await _pending_signals(conn, [r for r in found if r in listeners])
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
