"""Retention: prune finished runs by batches (decision 0031), and leases for the loops that
run once across every process (the periodic pruner)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from flowyard.domain.ids import WorkflowId
from flowyard.domain.retention import PruneBatch, PruneCursor, WorkflowRetention


class RetentionStore(Protocol):
    """What the retention service reads and deletes."""

    async def workflow_retentions(self) -> list[WorkflowRetention]:
        """Every workflow with a version, and the ``retention`` its latest version declares
        (None: it declares none), by name."""
        ...

    async def prune_runs(
        self,
        workflow_id: WorkflowId,
        before: datetime,
        *,
        limit: int,
        after: PruneCursor | None = None,
        dry_run: bool = False,
    ) -> PruneBatch:
        """One batch in one short transaction: delete up to ``limit`` top-level runs of the
        workflow that finished (succeeded, failed, cancelled, timed out) before ``before``,
        oldest finish first after ``after``, with their child runs and every row naming
        them (events, signals, branches, steps), and add the campaign runs among them to
        their campaign's ``pruned``. Runs something may still write to are skipped: a step
        in flight or an unfinished child run anywhere in the tree, or (PostgreSQL) a row
        another transaction holds (``SKIP LOCKED``: never waited for). With ``dry_run``,
        count instead and lock nothing."""
        ...

    async def release_campaign_limits(self, *, limit: int, dry_run: bool = False) -> int:
        """One short transaction: delete (or, with ``dry_run``, count) up to ``limit`` quota
        rows, with their slots, of campaigns whose runs have all ended (by their counters).
        Returns the rows."""
        ...

    async def purge_trigger_rows(
        self, now: datetime, *, limit: int, dry_run: bool = False
    ) -> dict[str, int]:
        """One short transaction: delete (or count) up to ``limit`` throttle windows over at
        ``now`` or whose hook or event trigger is gone, and up to ``limit`` debounced starts
        whose owner is gone; the rows by table (``trigger_throttles``,
        ``trigger_debounces``)."""
        ...

    async def take_lease(self, name: str, owner: str, *, now: datetime, until: datetime) -> bool:
        """Hold ``name`` until ``until`` when it is free (never taken, or expired at
        ``now``) or already ``owner``'s; False otherwise. A released lease is free only
        once its ``until`` has passed, for its last owner too."""
        ...

    async def release_lease(self, name: str, owner: str, *, until: datetime) -> bool:
        """Give up ``name`` if ``owner`` holds it; nobody may take it before ``until``
        (False: ``owner`` did not hold it)."""
        ...
