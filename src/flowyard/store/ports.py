"""The store port: everything the engine, worker and API need from persistence."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from flowyard.domain.auth import (
    ApiKeyRecord,
    AuditEntry,
    AuditRecord,
    LoginFailures,
    RefreshTokenRecord,
    Role,
    UserRecord,
)
from flowyard.domain.commands import RetryFrom, StepCompletion
from flowyard.domain.credentials import CredentialRecord, CredentialType, StoredCredential
from flowyard.domain.ids import RunId, StepId, WorkflowId
from flowyard.domain.records import (
    BranchResult,
    EventRecord,
    MoveFacts,
    MovePlan,
    NewRun,
    RunRecord,
    SignalRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)
from flowyard.domain.statuses import RunStatus, StepStatus


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
class CompletionResult:
    """What a batch of completions did: which were applied (False: stale, discarded) and
    which runs it ended, with their final status."""

    applied: list[bool]
    settled: dict[RunId, RunStatus] = field(default_factory=dict)


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
        expected_archived: bool | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Add a version; returns (version, created). An identical definition returns the
        latest version with created=False. PreconditionFailed (a Conflict) when
        ``expected_latest`` / ``expected_archived`` do not hold, checked atomically with the
        write."""
        ...

    async def archive_workflow(
        self,
        workflow_id: WorkflowId,
        *,
        expected_latest: int | None = None,
        expected_archived: bool | None = None,
    ) -> WorkflowRecord:
        """Archive a workflow (NotFound): hidden from lists, refuses new runs; a new version
        un-archives it. Archiving an archived workflow changes nothing. PreconditionFailed as
        in :meth:`add_version`."""
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

    async def list_versions(
        self, workflow_id: WorkflowId, *, limit: int | None = None, before: int | None = None
    ) -> list[VersionRecord]:
        """Versions newest first (all without ``limit``), below a version-number cursor."""
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

    async def list_steps(
        self,
        run_id: RunId,
        *,
        limit: int | None = None,
        after: int | None = None,
        status: StepStatus | None = None,
        node_id: str | None = None,
    ) -> list[StepRecord]:
        """Steps of a run in creation order (all without ``limit``), after a step-id cursor,
        optionally only in ``status`` or of ``node_id``."""
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

    async def load_run_states(
        self, claimed: Sequence[StepRecord], *, listening: Collection[str] = frozenset()
    ) -> dict[tuple[RunId, str], RunState]:
        """What executing these steps needs, per (run, branch): the run, the finished steps
        visible from the branch (the main path, enclosing branches and its own), the map
        item, the run's buffered signals (for the node types ``listening`` names and steps
        waiting for a signal) and, for steps woken from a fork, its results."""
        ...

    async def record_action(
        self,
        run_id: str,
        name: str,
        decide: Callable[[MoveFacts], MovePlan],
        *,
        actor: str,
        now: datetime,
        history: int = 1000,
    ) -> tuple[MoveFacts, SignalRecord]:
        """Decide and record a state-machine move in one transaction: under the run's lock,
        ``decide`` (pure; raises to refuse) gets the run, its latest ``history`` moves (the
        signals called ``name``, newest first) and the state step waiting for one; its
        move is recorded as the next such signal, with its event, and wakes that step.
        NotFound for an unknown run. Returns the facts decided on and the recorded move."""
        ...

    async def recent_signals(
        self, run_id: str, name: str, *, limit: int = 1000
    ) -> list[SignalRecord]:
        """The run's latest ``limit`` signals called ``name``, newest first."""
        ...

    async def send_signal(
        self, run_id: str, name: str, payload: Any, *, actor: str | None, now: datetime
    ) -> tuple[SignalRecord, bool]:
        """Deliver a signal (buffered until taken); True when it woke a waiting step.
        NotFound for an unknown run, Conflict for a finished one."""
        ...

    async def list_signals(
        self,
        run_id: str,
        *,
        limit: int = 1000,
        after: int | None = None,
        name: str | None = None,
        exclude: str | None = None,
    ) -> list[SignalRecord]:
        """Signals of a run, oldest first (after the id ``after``; only those called
        ``name``; not those called ``exclude``)."""
        ...

    async def cancel_orphans(self, now: datetime, *, limit: int = 500) -> list[RunId]:
        """Cancel active child runs whose parent ended or whose branch was cancelled."""
        ...

    async def complete_steps(
        self, completions: Sequence[StepCompletion], now: datetime
    ) -> CompletionResult:
        """Apply completions in one transaction; a stale one (lease lost) is discarded."""
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
        workflow_version: int | None = None,
        restart: RetryFrom | None = None,
    ) -> RunRecord:
        """Restart a failed/timed-out/cancelled run from its failed and cancelled steps,
        keeping succeeded outputs (Conflict if not retryable or nothing to re-run); on
        ``workflow_version`` when given; from ``restart``'s caught step when given."""
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

    async def get_user_by_id(self, user_id: str) -> UserRecord:
        """The user with this id (NotFound); never matches a username."""
        ...

    async def get_user_by_name(self, username: str) -> UserRecord:
        """The user with this username (NotFound); never matches an id."""
        ...

    async def session_user(self, user_id: str, family_id: str) -> tuple[UserRecord, bool]:
        """The user of an access token (NotFound) and whether its refresh-token family still
        has a token of this user that is not revoked (the session is live). One query."""
        ...

    async def list_users(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        role: Role | None = None,
        disabled: bool | None = None,
    ) -> list[UserRecord]:
        """Users by name (all without ``limit``) after a username cursor, optionally filtered
        by role and disabled flag."""
        ...

    async def count_users(self) -> int:
        """How many users exist."""
        ...

    async def update_user(self, user_id: str, changes: dict[str, Any], now: datetime) -> UserRecord:
        """Change ``role``, ``disabled`` or ``password_hash`` (NotFound); disabling or a new
        password revokes the user's refresh tokens. Demoting or disabling the last enabled
        admin is a Conflict, checked in the same transaction."""
        ...

    async def delete_user(self, user_id: str, *, now: datetime) -> None:
        """Delete a user and revoke its API keys at ``now`` (NotFound; Conflict for the last
        enabled admin)."""
        ...

    async def create_api_key(self, key: ApiKeyRecord) -> ApiKeyRecord:
        """Insert an API key (hash of its secret only)."""
        ...

    async def list_api_keys(
        self,
        *,
        limit: int | None = None,
        before: tuple[datetime, str] | None = None,
        role: Role | None = None,
        revoked: bool | None = None,
    ) -> list[ApiKeyRecord]:
        """API keys newest first (all without ``limit``) after a ``(created_at, id)`` cursor,
        optionally filtered by role and revocation."""
        ...

    async def find_api_key(self, prefix: str) -> ApiKeyRecord | None:
        """The key with this prefix."""
        ...

    async def find_api_key_and_owner(
        self, prefix: str
    ) -> tuple[ApiKeyRecord, UserRecord | None] | None:
        """The key with this prefix and its user (None: no user), or None."""
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

    async def prune_refresh_tokens(self, now: datetime, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` revoked or expired refresh tokens; how many."""
        ...

    async def claim_login_attempt(
        self,
        keys: Sequence[str],
        now: datetime,
        *,
        forget_before: datetime,
        wait: Callable[[Sequence[LoginFailures]], float],
    ) -> float:
        """Atomically (across processes): ``wait(counts)`` of the keys (in ``keys`` order;
        rows last attempted before ``forget_before`` count as none); when > 0 it is returned
        and nothing changes, else each key counts one more failure at ``now`` and 0.0 is
        returned."""
        ...

    async def forgive_login_attempt(self, clear: Sequence[str], discount: Sequence[str]) -> None:
        """A claimed attempt succeeded: delete ``clear``'s counts, take one failure back from
        ``discount``'s."""
        ...

    async def login_failures(self, keys: Sequence[str]) -> list[LoginFailures]:
        """The stored counts of ``keys``."""
        ...

    async def prune_login_failures(self, before: datetime) -> int:
        """Delete counts last attempted before ``before``; how many."""
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

    # -- credentials (ciphertext only; see flowyard.security.vault) -------------------------
    async def create_credential(
        self, record: CredentialRecord, ciphertext: bytes
    ) -> CredentialRecord:
        """Insert a credential (Conflict when the name is taken)."""
        ...

    async def get_credential(self, ref: str) -> StoredCredential:
        """A credential by id or name (NotFound)."""
        ...

    async def list_credentials(
        self, *, limit: int = 50, after: str | None = None, type: CredentialType | None = None
    ) -> list[StoredCredential]:
        """Credentials by name after a name cursor, optionally of one type."""
        ...

    async def update_credential(
        self,
        cred_id: str,
        changes: dict[str, Any],
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> StoredCredential:
        """Change ``ciphertext``/``key_id``/``description``/``allowed_origins``; version + 1
        (NotFound; Conflict when ``expected_version`` is stale)."""
        ...

    async def delete_credential(self, cred_id: str) -> None:
        """Delete a credential (NotFound)."""
        ...

    async def reencrypt_credentials(
        self, fn: Callable[[StoredCredential], tuple[bytes, str] | None]
    ) -> int:
        """Re-encrypt every credential in one transaction with what ``fn`` returns (None:
        keep the row); an exception from ``fn`` changes nothing. Returns the count."""
        ...
