"""The workflows list's figures in the SQL store: each workflow's newest run and its runs
counted per day over a few days (``GET /workflows?include=stats``).

Two statements in one read transaction, both on ``ix_runs_workflow_created`` (workflow,
created_at, id): the counts are one grouped query bounded by the first day's start, the
newest runs one lookup per workflow (the newest index entry of each).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.ids import RunId, WorkflowId
from flowyard.domain.records import WorkflowRunStats
from flowyard.domain.statuses import RunStatus
from flowyard.store.base import SqlBase
from flowyard.store.schema import runs, workflows

#: Workflows per call (a page of the workflows list) and days counted at most.
MAX_WORKFLOWS = 500
MAX_DAYS = 31


class RunStatsOps(SqlBase):
    """:meth:`~flowyard.store.ports.RunStore.workflow_run_stats`."""

    async def workflow_run_stats(
        self, workflow_ids: Sequence[WorkflowId], days: Sequence[datetime]
    ) -> dict[WorkflowId, WorkflowRunStats]:
        """See the port."""
        ids = list(dict.fromkeys(workflow_ids))
        if len(ids) > MAX_WORKFLOWS:
            raise ValueError(f"at most {MAX_WORKFLOWS} workflows at once")
        if not 1 <= len(days) <= MAX_DAYS or list(days) != sorted(days):
            raise ValueError(f"1 to {MAX_DAYS} ascending day starts")
        if not ids:
            return {}
        # The day's index by the last start a run is not before (newest day first: CASE takes
        # the first match). The same CASE in the select and the GROUP BY would be two sets of
        # bound parameters, which PostgreSQL does not see as one expression: a subquery.
        day = sa.case(
            *[(runs.c.created_at >= start, i) for i, start in reversed(list(enumerate(days)))]
        )
        bucketed = (
            sa.select(runs.c.workflow_id, day.label("day"))
            .where(runs.c.workflow_id.in_(ids), runs.c.created_at >= days[0])
            .subquery()
        )
        counts = sa.select(bucketed.c.workflow_id, bucketed.c.day, sa.func.count()).group_by(
            bucketed.c.workflow_id, bucketed.c.day
        )
        newer = runs.alias("newer")
        newest = (
            sa.select(newer.c.id)
            .where(newer.c.workflow_id == workflows.c.id)
            .order_by(newer.c.created_at.desc(), newer.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        lasts = sa.select(runs.c.workflow_id, runs.c.id, runs.c.status, runs.c.created_at).where(
            runs.c.id.in_(sa.select(newest).where(workflows.c.id.in_(ids)))
        )

        async def fn(conn: AsyncConnection) -> dict[WorkflowId, WorkflowRunStats]:
            per_day = {wf: [0] * len(days) for wf in ids}
            for wf, index, n in await conn.execute(counts):
                per_day[wf][index] = n
            found = {row.workflow_id: row for row in await conn.execute(lasts)}
            answer: dict[WorkflowId, WorkflowRunStats] = {}
            for wf in ids:
                last = found.get(wf)
                answer[wf] = WorkflowRunStats(
                    workflow_id=wf,
                    per_day=tuple(per_day[wf]),
                    last_run_id=RunId(last.id) if last else None,
                    last_status=RunStatus(last.status) if last else None,
                    last_created_at=last.created_at if last else None,
                )
            return answer

        return await self._tx(fn, write=False)
