"""Retention: how long finished runs are kept, and what a prune removed (decision 0031).

A policy is ``"forever"`` or a duration (``"30d"``, ``"12h"``, ``"P90D"``): finished runs
(succeeded, failed, cancelled, timed out) whose finish is older than it are deleted with
everything that hangs off them. A workflow's own ``retention`` (in its definition; the latest
version's governs every run of the workflow) wins over the global ``FLOWYARD_RETENTION``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flowyard.domain.durations import parse_duration
from flowyard.domain.ids import WorkflowId

#: The policy that keeps runs until someone deletes them (the global default).
FOREVER = "forever"
#: Longest policy text accepted (``"forever"``, ``"1h30m"``, ``"P1Y"`` is not a duration).
MAX_POLICY_CHARS = 32

#: The tables a prune deletes from, in the order it deletes (rows that reference a run
#: before the run): what its counts are keyed by.
PRUNED_TABLES = ("run_events", "signals", "branches", "steps", "runs")
#: Rows a prune deletes because their owner is gone, whatever the policies: the quota rows of
#: campaigns whose runs have all ended, throttle windows that are over, and the debounce and
#: throttle rows of deleted hooks and event triggers.
LEFTOVER_TABLES = ("quotas", "trigger_debounces", "trigger_throttles")


def parse_retention(value: object) -> float | None:
    """Seconds a finished run is kept (None: forever); ValueError saying why not."""
    if isinstance(value, str) and value.strip().lower() == FOREVER:
        return None
    if not isinstance(value, str) or len(value) > MAX_POLICY_CHARS:
        raise ValueError(f"{value!r} is not a retention: 'forever' or a duration like '30d'")
    return parse_duration(value)


def describe(keep_s: float | None) -> str:
    """A policy as people read it: ``forever``, ``30d``, ``12h``, ``90s``."""
    if keep_s is None:
        return FOREVER
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if keep_s >= size and keep_s % size == 0:
            return f"{int(keep_s // size)}{unit}"
    return f"{keep_s:g}s"


@dataclass(frozen=True, slots=True)
class WorkflowRetention:
    """A workflow and the ``retention`` its latest version declares (None: the global)."""

    workflow_id: WorkflowId
    name: str
    retention: str | None


@dataclass(frozen=True, slots=True)
class PruneCursor:
    """Where a prune of one workflow stands: the last candidate run it looked at (runs are
    taken oldest finish first; one it had to skip is not looked at again in that prune)."""

    finished_at: datetime
    run_id: str


@dataclass(frozen=True, slots=True)
class PruneBatch:
    """What one batch (one short transaction) deleted, or would delete (a dry run)."""

    #: Rows by table (:data:`PRUNED_TABLES`); ``runs`` counts child runs too.
    counts: dict[str, int]
    #: Candidate top-level runs the batch looked at (deleted or skipped).
    seen: int
    #: Of those, left alone: a run (or a child run) still has a step in flight, a child run
    #: is unfinished, or (PostgreSQL) another transaction holds one of them.
    skipped: int
    cursor: PruneCursor | None


@dataclass(slots=True)
class PruneReport:
    """What a prune deleted (or would delete), in total and per workflow (runs)."""

    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRUNED_TABLES, 0))
    #: Runs deleted per workflow name (only workflows that had some).
    runs_by_workflow: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    batches: int = 0
    #: The prune stopped before the end (a periodic pruner lost its lease).
    interrupted: bool = False
    #: Rows whose owner is gone, by table (:data:`LEFTOVER_TABLES`).
    leftovers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEFTOVER_TABLES, 0))

    @property
    def runs(self) -> int:
        """Runs deleted (or that would be), child runs included."""
        return self.counts["runs"]

    def add(self, workflow: str, batch: PruneBatch) -> None:
        """Count one batch of ``workflow``."""
        for table, n in batch.counts.items():
            self.counts[table] = self.counts.get(table, 0) + n
        if batch.counts.get("runs"):
            self.runs_by_workflow[workflow] = (
                self.runs_by_workflow.get(workflow, 0) + batch.counts["runs"]
            )
        self.skipped += batch.skipped
        self.batches += 1
