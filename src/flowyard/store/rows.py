"""Row <-> record mapping and small helpers shared by the SQL store modules."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.errors import NotFound
from flowyard.domain.ids import EventId, RunId, StepId, WorkflowId
from flowyard.domain.records import (
    EventRecord,
    NewRun,
    RunRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)
from flowyard.domain.statuses import ACTIVE_STEP_STATUSES, RunStatus, StepStatus
from flowyard.store.schema import CLAIMABLE_SQL, CLAIMABLE_STATUSES, runs

T = TypeVar("T")
log = logging.getLogger(__name__)

# Literal predicates (not bound parameters) so the planners can use the partial indexes.
CLAIMABLE = sa.text(f"steps.{CLAIMABLE_SQL.replace(' held', ' steps.held')}")
LEASED = sa.text("steps.status = 'running'")
#: Steps not yet finished that are not running (cancelling a run cancels these).
PENDING = CLAIMABLE_STATUSES
#: Steps that keep their run alive.
ACTIVE = tuple(sorted(s.value for s in ACTIVE_STEP_STATUSES))


def definition_checksum(definition: dict[str, Any]) -> str:
    """Stable hash of a definition (key order does not matter)."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def workflow_record(row: Row[Any]) -> WorkflowRecord:
    return WorkflowRecord(
        id=WorkflowId(row.id),
        name=row.name,
        latest_version=row.latest_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        archived=bool(row.archived),
        description=row.description,
    )


def version_record(row: Row[Any]) -> VersionRecord:
    return VersionRecord(
        workflow_id=WorkflowId(row.workflow_id),
        version=row.version,
        definition=row.definition,
        checksum=row.checksum,
        created_at=row.created_at,
        created_by=row.created_by,
        layout=row.layout,
    )


def run_record(row: Row[Any]) -> RunRecord:
    return RunRecord(
        id=RunId(row.id),
        workflow_id=WorkflowId(row.workflow_id),
        workflow_version=row.workflow_version,
        status=RunStatus(row.status),
        input=row.input,
        vars=row.vars or {},
        output=row.output,
        error=row.error,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        updated_at=row.updated_at,
        campaign_id=row.campaign_id,
        parent_run_id=RunId(row.parent_run_id) if row.parent_run_id else None,
        deadline_at=row.deadline_at,
        error_type=row.error_type,
        correlation_key=row.correlation_key,
        correlation_unique=bool(row.correlation_unique),
        parent_step_id=StepId(row.parent_step_id) if row.parent_step_id is not None else None,
        schedule_id=row.schedule_id,
        priority=row.priority,
        lane=row.lane,
        limit_key=row.limit_key,
    )


async def lock_run(conn: AsyncConnection, run_id: str) -> RunRecord:
    """Lock the run's row against other writers (every writer locks runs before their steps);
    NotFound when there is none."""
    row = (
        await conn.execute(
            sa.select(runs).where(runs.c.id == run_id).with_for_update(key_share=True)
        )
    ).first()
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return run_record(row)


def step_record(row: Row[Any]) -> StepRecord:
    return StepRecord(
        id=StepId(row.id),
        run_id=RunId(row.run_id),
        node_id=row.node_id,
        node_type=row.node_type,
        branch=row.branch,
        iteration=row.iteration,
        status=StepStatus(row.status),
        attempt=row.attempt,
        available_at=row.available_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        output=row.output,
        error=row.error,
        recoveries=row.recoveries,
        claims=row.claims,
        wait_until=row.wait_until,
        waiting_for=row.waiting_for,
        wait_data=row.wait_data,
        priority=row.priority,
        lane=row.lane,
    )


def event_record(row: Row[Any]) -> EventRecord:
    return EventRecord(
        id=EventId(row.id),
        run_id=RunId(row.run_id),
        step_id=StepId(row.step_id) if row.step_id is not None else None,
        type=row.type,
        data=row.data or {},
        actor=row.actor,
        created_at=row.created_at,
    )


def event_row(
    run_id: str,
    kind: str,
    data: dict[str, Any],
    now: datetime,
    *,
    step_id: int | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step_id": step_id,
        "type": kind,
        "data": data,
        "actor": actor,
        "created_at": now,
    }


def new_step_row(
    run_id: str,
    node_id: str,
    node_type: str,
    now: datetime,
    *,
    priority: int,
    lane: str,
    branch: str = "",
    iteration: int = 0,
    available_at: datetime | None = None,
    held: bool = False,
) -> dict[str, Any]:
    """The ``steps`` row of a step to schedule (the one place a new step row is built). A
    step has its run's ``priority`` and ``lane``: the claim's order (decision 0032)."""
    return {
        "run_id": run_id,
        "node_id": node_id,
        "node_type": node_type,
        "branch": branch,
        "iteration": iteration,
        "status": StepStatus.SCHEDULED.value,
        "attempt": 0,
        "priority": priority,
        "lane": lane,
        "available_at": now if available_at is None else available_at,
        "claims": 0,
        "recoveries": 0,
        "held": held,
        "created_at": now,
    }


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def created_only(
    new_runs: Sequence[NewRun], results: Sequence[tuple[RunRecord, bool] | None]
) -> list[NewRun]:
    return [
        new
        for new, result in zip(new_runs, results, strict=True)
        if result is not None and result[1]
    ]


def run_from_dict(row: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=RunId(row["id"]),
        workflow_id=WorkflowId(row["workflow_id"]),
        workflow_version=row["workflow_version"],
        status=RunStatus(row["status"]),
        input=row["input"],
        vars=row["vars"] or {},
        output=None,
        error=None,
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        started_at=None,
        finished_at=None,
        updated_at=row["updated_at"],
        campaign_id=row["campaign_id"],
        parent_run_id=row["parent_run_id"],
        deadline_at=row["deadline_at"],
        correlation_key=row["correlation_key"],
        correlation_unique=row["correlation_unique"],
        schedule_id=row["schedule_id"],
        priority=row["priority"],
        lane=row["lane"],
        limit_key=row.get("limit_key"),
    )
