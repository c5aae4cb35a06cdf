"""The queue: what workers need to claim, execute and complete steps."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from flowyard.domain.commands import StepCompletion
from flowyard.domain.ids import RunId, StepId
from flowyard.domain.records import (
    BranchResult,
    RunRecord,
    SignalRecord,
    StepRecord,
)
from flowyard.domain.statuses import RunStatus


@dataclass(slots=True)
class RunState:
    """What a worker needs to execute steps of a run: the run and its finished steps."""

    run: RunRecord
    #: ``steps.<node_id>`` scope entries: latest finished execution of each node.
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Highest iteration seen per node (loops).
    iterations: dict[str, int] = field(default_factory=dict)
    #: The branch ('' : main path) and, inside a map, the item and its index.
    branch: str = ""
    item: Any = None
    index: int | None = None
    #: Signals delivered to the run and not taken yet, oldest first.
    signals: list[SignalRecord] = field(default_factory=list)
    #: Results of the forks of woken steps, by step id.
    children: dict[int, list[BranchResult]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a worker takes: up to ``limit`` due steps under a lease of ``lease_s`` seconds,
    with the states to execute them (``listening``: the node types that read a run's
    buffered signals). With ``runs``, only steps of those runs: a worker continuing the runs
    it has just advanced (decision 0039)."""

    worker_id: str
    limit: int
    lease_s: float
    listening: Collection[str] = frozenset()
    runs: frozenset[RunId] | None = None


@dataclass(slots=True)
class Claimed:
    """Claimed steps and the states of their runs, by (run, branch)."""

    steps: list[StepRecord] = field(default_factory=list)
    states: dict[tuple[RunId, str], RunState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """What a batch of completions did: which were applied (False: stale, discarded) and
    which runs it ended, with their final status; and the steps it claimed for the worker
    that asked it to chain (decision 0039)."""

    applied: list[bool]
    settled: dict[RunId, RunStatus] = field(default_factory=dict)
    chained: Claimed = field(default_factory=Claimed)


class QueueStore(Protocol):
    """Claiming due steps, loading what they need, committing their results, leases and
    recovery; and the periodic passes (orphans, run deadlines)."""

    async def claim_steps(
        self, worker_id: str, *, limit: int, now: datetime, lease_s: float
    ) -> list[StepRecord]:
        """Claim up to ``limit`` due steps with a lease."""
        ...

    async def claim_work(self, request: ClaimRequest, now: datetime) -> Claimed:
        """Claim as :meth:`claim_steps` does and load the states of the claimed steps'
        runs as :meth:`load_run_states` does, in one transaction."""
        ...

    async def load_run_states(
        self, claimed: Sequence[StepRecord], *, listening: Collection[str] = frozenset()
    ) -> dict[tuple[RunId, str], RunState]:
        """What executing these steps needs, per (run, branch): the run, the finished steps
        visible from the branch (the main path, enclosing branches and its own), the map
        item, the run's buffered signals (for the node types ``listening`` names and steps
        waiting for a signal) and, for steps woken from a fork, its results."""
        ...

    async def complete_steps(
        self,
        completions: Sequence[StepCompletion],
        now: datetime,
        *,
        chain: ClaimRequest | None = None,
    ) -> CompletionResult:
        """Apply completions in one transaction; a stale one (lease lost) is discarded.
        With ``chain``, the same transaction claims up to ``chain.limit`` steps that are due
        in the runs of ``chain.runs`` it advanced, with their states (decision 0039)."""
        ...

    async def extend_leases(
        self, worker_id: str, held: Sequence[StepRecord], *, now: datetime, lease_s: float
    ) -> set[StepId]:
        """Heartbeat: push the lease of still-held steps forward; returns the ids still held
        (a step missing was cancelled or recovered elsewhere: its worker should stop it)."""
        ...

    async def release_steps(self, worker_id: str, held: Sequence[StepRecord], now: datetime) -> int:
        """Give claimed steps back without counting an attempt (graceful shutdown)."""
        ...

    async def recover_expired(
        self, worker_id: str, *, now: datetime, max_recoveries: int, lease_s: float
    ) -> tuple[int, list[StepRecord]]:
        """Requeue steps whose lease expired. Steps already recovered ``max_recoveries`` times
        are claimed by ``worker_id`` instead and returned, for the worker to fail them."""
        ...

    async def cancel_orphans(self, now: datetime, *, limit: int = 500) -> list[RunId]:
        """Cancel active child runs whose parent ended or whose branch was cancelled."""
        ...

    async def expire_runs(self, *, now: datetime, limit: int = 500) -> list[RunId]:
        """Time out unfinished runs past their deadline; returns their ids."""
        ...
