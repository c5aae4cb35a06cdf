"""The store port: everything the engine, worker and API need from persistence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from flowyard.domain.auth import (
    ApiKeyRecord,
    AuditEntry,
    AuditRecord,
    RefreshTokenRecord,
    Role,
    UserRecord,
)
from flowyard.domain.commands import Transition
from flowyard.domain.ids import RunId, StepId, WorkflowId
from flowyard.domain.records import (
    EventRecord,
    NewRun,
    RunRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)
from flowyard.domain.statuses import RunStatus


@dataclass(frozen=True, slots=True)
class StepCompletion:
    """A claimed step and what its execution changes."""

    step: StepRecord
    transition: Transition


@dataclass(slots=True)
class RunState:
    """What a worker needs to execute steps of a run: the run and its finished steps."""

    run: RunRecord
    #: ``steps.<node_id>`` scope entries: latest finished execution of each node.
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Highest iteration seen per node (loops).
    iterations: dict[str, int] = field(default_factory=dict)


class Store(Protocol):
    """Persistence port. Implementations: ``SqliteStore``, ``PostgresStore``."""

    dialect: str

    async def migrate(self) -> None:
        """Bring the schema to the newest version."""
        ...

    async def schema_is_current(self) -> bool:
        """True when no migration is pending."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    def pool_usage(self) -> list[tuple[str, int, int]]:
        """(engine, connections in use, pool size) per sized pool, without a query."""
        ...

    # -- workflows -------------------------------------------------------------------------
    async def create_workflow(
        self, name: str, description: str | None, definition: dict[str, Any], actor: str | None
    ) -> tuple[WorkflowRecord, VersionRecord]:
        """Create a workflow with version 1 (Conflict if the name exists)."""
        ...

    async def add_version(
        self,
        workflow_id: WorkflowId,
        definition: dict[str, Any],
        actor: str | None,
        *,
        expected_latest: int | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Add a version; returns (version, created). An identical definition returns the
        latest version with created=False. Conflict when ``expected_latest`` is stale."""
        ...

    async def archive_workflow(self, workflow_id: WorkflowId) -> WorkflowRecord:
        """Archive a workflow (NotFound): hidden from lists, refuses new runs; a new version
        un-archives it."""
        ...

    async def get_workflow(self, ref: str) -> WorkflowRecord:
        """A workflow by id or name (NotFound)."""
        ...

    async def list_workflows(
        self, *, limit: int = 50, after: str | None = None, include_archived: bool = False
    ) -> list[WorkflowRecord]:
        """Workflows by name, after a name cursor."""
        ...

    async def get_version(
        self, workflow_id: WorkflowId, version: int | None = None
    ) -> VersionRecord:
        """A version (latest when None) (NotFound)."""
        ...

    async def list_versions(self, workflow_id: WorkflowId) -> list[VersionRecord]:
        """All versions, newest first."""
        ...

    # -- runs ------------------------------------------------------------------------------
    async def start_runs(
        self, new_runs: Sequence[NewRun], now: datetime
    ) -> list[tuple[RunRecord, bool]]:
        """Create runs and their first steps in one transaction. A run whose idempotency key
        was used for the same workflow is not created again: (existing, False)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord:
        """A run (NotFound)."""
        ...

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_id: WorkflowId | None = None,
        limit: int = 50,
        before: str | None = None,
        error_type: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, before an id cursor; ``error_type`` filters failures by type
        (exact, or a prefix ending in ``*``)."""
        ...

    async def list_steps(self, run_id: RunId) -> list[StepRecord]:
        """Steps of a run in creation order."""
        ...

    async def list_events(
        self, run_id: RunId, *, after: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        """Events of a run after an event-id cursor."""
        ...

    async def read_events(
        self,
        *,
        after: int,
        upto: int,
        run_id: RunId | None = None,
        workflow_id: WorkflowId | None = None,
        status: RunStatus | None = None,
        limit: int = 500,
    ) -> list[EventRecord]:
        """Events with ``after < id <= upto`` in id order, filtered by run, by workflow and by
        the run's current status."""
        ...

    async def event_horizon(self) -> int | None:
        """The highest event id H such that every event with an id <= H is committed or will
        never be (ids can commit out of order on PostgreSQL); None when it cannot be known
        now (an event-writing transaction is still open). Streams deliver only up to H."""
        ...

    # -- queue -----------------------------------------------------------------------------
    async def claim_steps(
        self, worker_id: str, *, limit: int, now: datetime, lease_s: float
    ) -> list[StepRecord]:
        """Claim up to ``limit`` due steps with a lease."""
        ...

    async def load_run_states(self, run_ids: Sequence[RunId]) -> dict[RunId, RunState]:
        """Runs and their finished step outputs, for building expression scopes."""
        ...

    async def complete_steps(
        self, completions: Sequence[StepCompletion], now: datetime
    ) -> list[bool]:
        """Apply completions in one transaction; a stale one (lease lost) is discarded: False."""
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

    # -- lifecycle -------------------------------------------------------------------------
    async def cancel_run(
        self, run_id: str, *, actor: str | None, reason: str | None, now: datetime
    ) -> RunRecord:
        """Cancel an unfinished run (Conflict otherwise); running steps are cancelled too."""
        ...

    async def pause_run(self, run_id: str, *, actor: str | None, now: datetime) -> RunRecord:
        """Pause: hold due and backing-off steps (deadlines kept) (Conflict if not active)."""
        ...

    async def resume_run(self, run_id: str, *, actor: str | None, now: datetime) -> RunRecord:
        """Resume a paused run (Conflict otherwise)."""
        ...

    async def retry_run(
        self,
        run_id: str,
        *,
        actor: str | None,
        now: datetime,
        deadline_at: datetime | None = None,
    ) -> RunRecord:
        """Restart a failed/timed-out/cancelled run from its failed and cancelled steps,
        keeping succeeded outputs (Conflict if not retryable or nothing to re-run)."""
        ...

    async def expire_runs(self, *, now: datetime, limit: int = 500) -> list[RunId]:
        """Time out unfinished runs past their deadline; returns their ids."""
        ...

    async def queue_depth(self) -> dict[str, int]:
        """Step counts by status (for metrics and benchmarks)."""
        ...

    # -- security --------------------------------------------------------------------------
    async def create_user(
        self, user_id: str, username: str, password_hash: str, role: Role, now: datetime
    ) -> UserRecord:
        """Insert a user (Conflict when the name is taken)."""
        ...

    async def get_user(self, ref: str) -> UserRecord:
        """A user by id or username (NotFound)."""
        ...

    async def list_users(self) -> list[UserRecord]:
        """Every user by name."""
        ...

    async def count_users(self) -> int:
        """How many users exist."""
        ...

    async def update_user(self, user_id: str, changes: dict[str, Any], now: datetime) -> UserRecord:
        """Change ``role``, ``disabled`` or ``password_hash`` (NotFound); disabling or a new
        password revokes the user's refresh tokens."""
        ...

    async def delete_user(self, user_id: str) -> None:
        """Delete a user (NotFound)."""
        ...

    async def create_api_key(self, key: ApiKeyRecord) -> ApiKeyRecord:
        """Insert an API key (hash of its secret only)."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every API key, newest first."""
        ...

    async def find_api_key(self, prefix: str) -> ApiKeyRecord | None:
        """The key with this prefix."""
        ...

    async def revoke_api_key(self, key_id: str, now: datetime) -> ApiKeyRecord:
        """Revoke a key (NotFound)."""
        ...

    async def touch_api_key(self, key_id: str, now: datetime) -> None:
        """Set a key's last-used time."""
        ...

    async def add_refresh_token(self, token: RefreshTokenRecord) -> None:
        """Insert a refresh token."""
        ...

    async def rotate_refresh_token(self, jti: str, new: RefreshTokenRecord, now: datetime) -> str:
        """Use ``jti`` and add ``new`` to its family: ``ok``, ``reused`` (family revoked) or
        ``invalid``."""
        ...

    async def revoke_refresh_family(self, family_id: str, now: datetime) -> None:
        """Revoke a refresh-token family."""
        ...

    async def append_audit(self, entry: AuditEntry, now: datetime) -> None:
        """Write an audit entry in its own transaction."""
        ...

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Audit entries newest first, before an id cursor."""
        ...
