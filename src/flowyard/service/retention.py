"""Retention (decision 0031): which finished runs are old enough to delete, the prune that
deletes them by small batches (``flowyard prune``), and the periodic pruner a worker process
runs beside its first worker, one at a time across every process (a lease row).

A workflow's policy is the ``retention`` its latest version declares, else the global
``FLOWYARD_RETENTION`` (``forever`` by default: nothing is deleted until someone decides to).
``--older-than`` replaces every policy for one prune: it is an operator's explicit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import InvalidInput, StoreUnavailable
from flowyard.domain.ids import WorkflowId
from flowyard.domain.retention import PruneCursor, PruneReport, describe, parse_retention
from flowyard.observability import Metrics
from flowyard.store.ports import AuditStore, RetentionStore, WorkflowStore

_log = logging.getLogger("flowyard.retention")

#: The lease row of the periodic pruner.
PRUNE_LEASE = "prune"
#: Rows whose owner is gone that a dry run counts at most, per kind.
DRY_RUN_COUNT = 1_000_000


class RetentionStores(RetentionStore, WorkflowStore, AuditStore, Protocol):
    """What retention reads and deletes: runs by batches, workflows by name; and the audit
    log, which records each prune."""


@dataclass(frozen=True, slots=True)
class Policy:
    """How long one workflow's finished runs are kept, and where that comes from."""

    workflow_id: WorkflowId
    workflow: str
    #: Seconds after their finish (None: forever).
    keep_s: float | None
    #: Where it comes from: ``its retention`` (the definition's), ``FLOWYARD_RETENTION``
    #: or ``--older-than``.
    source: str

    @property
    def shown(self) -> str:
        """The policy as people write it (``30d``, ``forever``)."""
        return describe(self.keep_s)


def parse_setting(value: str, name: str = "FLOWYARD_RETENTION") -> float | None:
    """A retention given as a setting; InvalidInput naming it when it is neither
    ``forever`` nor a duration."""
    try:
        return parse_retention(value)
    except ValueError as exc:
        raise InvalidInput(f"invalid {name}: {exc}") from None


def parse_age(value: str, name: str = "--older-than") -> float:
    """An age to prune at (``30d``): a duration, not ``forever`` (InvalidInput)."""
    keep_s = parse_setting(value, name)
    if keep_s is None:
        raise InvalidInput(f"invalid {name}: an age like 30d or 12h, not {value!r}")
    return keep_s


class RetentionService:
    """Policies and prunes over a store (the CLI's ``flowyard prune``, the periodic pruner)."""

    def __init__(
        self,
        store: RetentionStores,
        *,
        clock: Callable[[], datetime],
        metrics: Metrics,
        retention: str = "forever",
        batch: int = 200,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        #: The global policy in seconds (None: forever).
        self.default_s = parse_setting(retention)
        self.batch = batch

    async def policies(
        self, *, workflow: str | None = None, older_than_s: float | None = None
    ) -> list[Policy]:
        """Every workflow's policy (or one workflow's, by id or name: NotFound), by name.
        With ``older_than_s`` that age applies to all of them."""
        declared = await self.store.workflow_retentions()
        if workflow is not None:
            record = await self.store.get_workflow(workflow)
            declared = [d for d in declared if d.workflow_id == record.id]
        policies = []
        for d in declared:
            if older_than_s is not None:
                policies.append(Policy(d.workflow_id, d.name, older_than_s, "--older-than"))
            elif d.retention is not None:
                try:
                    keep_s = parse_retention(d.retention)
                except ValueError:  # saved before retention was checked: keep the runs
                    _log.warning("workflow %s: retention %r ignored", d.name, d.retention)
                    continue
                policies.append(Policy(d.workflow_id, d.name, keep_s, "its retention"))
            else:
                policies.append(Policy(d.workflow_id, d.name, self.default_s, "FLOWYARD_RETENTION"))
        return policies

    async def prune(
        self,
        *,
        older_than: str | None = None,
        workflow: str | None = None,
        dry_run: bool = False,
        keep_going: Callable[[], Awaitable[bool]] | None = None,
        audit: AuditEntry | None = None,
    ) -> PruneReport:
        """Delete (or, with ``dry_run``, count) the finished runs past their policy, every
        workflow in turn, by batches of ``batch`` top-level runs, each its own transaction.
        ``keep_going`` is asked between batches (False: stop there, ``interrupted``).
        ``audit`` is written at the end with what was deleted (not for a dry run)."""
        older_than_s = None if older_than is None else parse_age(older_than)
        report = PruneReport(dry_run=dry_run)
        for policy in await self.policies(workflow=workflow, older_than_s=older_than_s):
            if policy.keep_s is None:
                continue
            if report.batches and keep_going is not None and not await keep_going():
                report.interrupted = True
                break
            before = self.clock() - timedelta(seconds=policy.keep_s)
            if not await self._prune_workflow(policy, before, report, keep_going):
                report.interrupted = True
                break
        if workflow is None and not report.interrupted:
            report.interrupted = not await self._prune_leftovers(report, keep_going)
        if dry_run:
            return report
        for name, n in report.runs_by_workflow.items():
            self.metrics.runs_pruned.labels(name).inc(n)
        if audit is not None:
            audit.detail = {
                "older_than": older_than,
                "workflow": workflow,
                "deleted": dict(report.counts),
                "leftovers": dict(report.leftovers),
                "interrupted": report.interrupted,
            }
            await self.store.append_audit(audit, self.clock())
        return report

    async def _prune_leftovers(
        self, report: PruneReport, keep_going: Callable[[], Awaitable[bool]] | None
    ) -> bool:
        """Rows whose owner is gone, whatever the policies: quota rows of campaigns whose
        runs all ended, throttle windows that are over, debounce and throttle rows of
        deleted hooks and triggers; by batches of ``batch`` rows. False: stopped by
        ``keep_going``."""
        dry_run = report.dry_run
        # A dry run deletes nothing, so a batch would count the same rows again: one count.
        batch = DRY_RUN_COUNT if dry_run else self.batch
        while True:
            n = await self.store.release_campaign_limits(limit=batch, dry_run=dry_run)
            report.leftovers["quotas"] += n
            if n < batch or dry_run:
                break
            if keep_going is not None and not await keep_going():
                return False
        while True:
            found = await self.store.purge_trigger_rows(self.clock(), limit=batch, dry_run=dry_run)
            for table, n in found.items():
                report.leftovers[table] += n
            if max(found.values(), default=0) < batch or dry_run:
                return True
            if keep_going is not None and not await keep_going():
                return False

    async def _prune_workflow(
        self,
        policy: Policy,
        before: datetime,
        report: PruneReport,
        keep_going: Callable[[], Awaitable[bool]] | None,
    ) -> bool:
        """Batches until one finds fewer candidates than it may take; False: stopped by
        ``keep_going``."""
        cursor: PruneCursor | None = None
        while True:
            batch = await self.store.prune_runs(
                policy.workflow_id, before, limit=self.batch, after=cursor, dry_run=report.dry_run
            )
            report.add(policy.workflow, batch)
            if batch.seen < self.batch or batch.cursor is None:
                return True
            cursor = batch.cursor
            if keep_going is not None and not await keep_going():
                return False


class Pruner:
    """The periodic prune, run as a companion of a process's first worker. Every process
    has one; a lease row lets one prune at a time, once per ``interval_s`` across all of
    them: the pruner that finishes a pass leaves the lease free from ``interval_s`` later."""

    def __init__(
        self,
        retention: RetentionService,
        store: RetentionStore,
        *,
        owner: str,
        interval_s: float,
        lease_s: float = 60.0,
        clock: Callable[[], datetime],
    ) -> None:
        self.retention = retention
        self.store = store
        self.owner = owner
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.clock = clock
        self._stop = asyncio.Event()
        self._renewed_at: datetime | None = None
        self._renew_every = timedelta(seconds=lease_s / 3)

    def stop(self) -> None:
        """Stop after the current batch."""
        self._stop.set()

    async def _renew(self) -> bool:
        """Hold the lease ``lease_s`` more (asked between batches and workflows; written at
        most every third of ``lease_s``); False: stopping, or another process has it."""
        if self._stop.is_set():
            return False
        now = self.clock()
        if self._renewed_at is not None and now - self._renewed_at < self._renew_every:
            return True
        until = now + timedelta(seconds=self.lease_s)
        held = await self.store.take_lease(PRUNE_LEASE, self.owner, now=now, until=until)
        self._renewed_at = now if held else None
        return held

    async def run_once(self) -> PruneReport | None:
        """Prune if the lease is free (the last pass was ``interval_s`` ago or its pruner
        died); None when another process holds it or it is not due."""
        self._renewed_at = None
        if not await self._renew():
            return None
        report = await self.retention.prune(keep_going=self._renew)
        if report.runs or any(report.leftovers.values()):
            audit = AuditEntry(
                "retention.prune",
                f"pruner:{self.owner}",
                source_ip="worker",
                detail={
                    "deleted": dict(report.counts),
                    "leftovers": dict(report.leftovers),
                    "interrupted": report.interrupted,
                },
            )
            await self.retention.store.append_audit(audit, self.clock())
        # Free for whoever comes first once the interval has passed (an interrupted pass
        # lost its lease: someone else holds it, and this does nothing).
        await self.store.release_lease(
            PRUNE_LEASE, self.owner, until=self.clock() + timedelta(seconds=self.interval_s)
        )
        if report.runs:
            _log.info(
                "pruned %d finished runs (%d steps, %d events) in %d batches",
                report.runs,
                report.counts["steps"],
                report.counts["run_events"],
                report.batches,
            )
        return report

    async def run(self) -> None:
        """Try every ``min(interval_s, 60)`` seconds until stopped (or cancelled with the
        worker); a failed pass (the database away) is logged and tried again."""
        poll_s = min(self.interval_s, 60.0)
        while not self._stop.is_set():
            try:
                await self.run_once()
            except StoreUnavailable as exc:
                _log.warning("pruner: store unavailable: %s", exc)
            except Exception:  # the loop outlives any one failure; the log says which
                _log.exception("pruner: pass failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_s):
                    await self._stop.wait()
