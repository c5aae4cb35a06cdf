"""Tables (SQLAlchemy Core). Alembic migrations create exactly these; a test proves it.

The ``steps`` table is the queue: a worker claims rows whose status is claimable and whose
``available_at`` has passed, and holds them with a lease (``lease_owner``,
``lease_expires_at``). ``claims`` counts claims so a late completion from a worker whose lease
expired is recognised and discarded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from flowyard.domain.priorities import BULK, DEFAULT_WEIGHT, INTERACTIVE
from flowyard.domain.statuses import CLAIMABLE_STEP_STATUSES, RunStatus


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; SQLite gets naive UTC so text comparison orders correctly."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to naive values read back from SQLite."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Which steps a worker may claim (once due). Also the partial index's predicate: the claim
#: query uses the same literal text so both planners pick the index.
CLAIMABLE_STATUSES = tuple(sorted(s.value for s in CLAIMABLE_STEP_STATUSES))
CLAIMABLE_SQL = f"status IN ({', '.join(repr(s) for s in CLAIMABLE_STATUSES)}) AND NOT held"

#: Runs that have not ended. A unique correlation key is held only by these: the partial
#: unique index frees the key the moment its run ends, whichever writer ends it.
UNFINISHED_STATUSES = tuple(sorted(s.value for s in RunStatus if not s.is_terminal))
OPEN_CORRELATION_SQL = (
    f"correlation_unique AND status IN ({', '.join(repr(s) for s in UNFINISHED_STATUSES)})"
)

#: The runs retention may take (decision 0031), and the predicate of their partial index.
RETENTION_SQL = "finished_at IS NOT NULL AND parent_run_id IS NULL"

JSONType: sa.types.TypeEngine[Any] = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: JSON kept as written, its keys in their order (``json`` on PostgreSQL, where ``jsonb``
#: reorders them): a draft's undo gives back the bytes of the step before (migration 0022).
OrderedJSONType: sa.types.TypeEngine[Any] = sa.JSON()
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("latest_version", sa.Integer, nullable=False),
    sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

workflow_versions = sa.Table(
    "workflow_versions",
    metadata,
    sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("definition", JSONType, nullable=False),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    # Node positions on the builder's canvas, published from a draft (migration 0014): kept
    # beside the definition, never part of what runs.
    sa.Column("layout", JSONType, nullable=True),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("workflow_version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input", JSONType, nullable=True),
    sa.Column("vars", JSONType, nullable=True),
    sa.Column("output", JSONType, nullable=True),
    sa.Column("error", JSONType, nullable=True),
    # The error's type, copied out of ``error`` so failed runs can be filtered by it.
    sa.Column("error_type", sa.String(128), nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("campaign_id", sa.String(40), nullable=True),
    sa.Column("parent_run_id", sa.String(40), nullable=True),
    sa.Column("deadline_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # -- migration 0011: the business key replies address the run by, and its parent step.
    sa.Column("correlation_key", sa.String(200), nullable=True),
    # The key was unique when the run started (its version declared it): only such runs
    # are in the unique index below.
    sa.Column("correlation_unique", sa.Boolean, nullable=False, server_default=sa.false()),
    # A child run's sub-workflow step (in the run ``parent_run_id``).
    sa.Column("parent_step_id", BigIntId, nullable=True),
    # -- migration 0013: the schedule that started the run (no foreign key: a deleted
    # schedule's runs keep naming it).
    sa.Column("schedule_id", sa.String(40), nullable=True),
    # -- migration 0018: what the run's steps inherit, the claim's order (decision 0032):
    # the priority, and the lane (its campaign, or its parent's; '' outside campaigns).
    sa.Column("priority", sa.Integer, nullable=False, server_default=str(INTERACTIVE)),
    sa.Column("lane", sa.String(40), nullable=False, server_default=""),
    # The quota key of its campaign's limit per concurrency key (decision 0032).
    sa.Column("limit_key", sa.String(80), nullable=True),
    sa.UniqueConstraint("workflow_id", "idempotency_key"),
    sa.Index(None, "status", "id"),
    sa.Index(None, "workflow_id", "id"),
    # -- migration 0015: partial, so runs outside campaigns do not maintain them. A campaign's
    # runs page by id; its finished runs of the last minute give its rate.
    sa.Index(
        "ix_runs_campaign",
        "campaign_id",
        "id",
        postgresql_where=sa.text("campaign_id IS NOT NULL"),
        sqlite_where=sa.text("campaign_id IS NOT NULL"),
    ),
    sa.Index(
        "ix_runs_campaign_finished",
        "campaign_id",
        "finished_at",
        postgresql_where=sa.text("campaign_id IS NOT NULL AND finished_at IS NOT NULL"),
        sqlite_where=sa.text("campaign_id IS NOT NULL AND finished_at IS NOT NULL"),
    ),
    sa.Index(None, "parent_run_id"),
    sa.Index(None, "status", "error_type"),
    sa.Index(None, "schedule_id", "id"),
    sa.Index(
        "ix_runs_deadline",
        "deadline_at",
        postgresql_where=sa.text("deadline_at IS NOT NULL"),
        sqlite_where=sa.text("deadline_at IS NOT NULL"),
    ),
    # Partial: runs without a key (a campaign's bulk start) do not maintain it.
    sa.Index(
        "ix_runs_correlation_key",
        "correlation_key",
        "id",
        postgresql_where=sa.text("correlation_key IS NOT NULL"),
        sqlite_where=sa.text("correlation_key IS NOT NULL"),
    ),
    sa.Index(
        "uq_runs_open_correlation",
        "workflow_id",
        "correlation_key",
        unique=True,
        postgresql_where=sa.text(OPEN_CORRELATION_SQL),
        sqlite_where=sa.text(OPEN_CORRELATION_SQL),
    ),
    # -- migration 0017: retention takes a workflow's finished top-level runs oldest finish
    # first (child runs go with their parent); runs that have not finished are not in it.
    sa.Index(
        "ix_runs_retention",
        "workflow_id",
        "finished_at",
        "id",
        postgresql_where=sa.text(RETENTION_SQL),
        sqlite_where=sa.text(RETENTION_SQL),
    ),
    # -- migration 0020: the workflows list's figures (GET /workflows?include=stats): a
    # workflow's runs of the last days, counted per day, and its newest run.
    sa.Index("ix_runs_workflow_created", "workflow_id", "created_at", "id"),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("node_type", sa.String(128), nullable=False),
    # Distinguishes parallel/map branches; '' for the main path.
    sa.Column("branch", sa.String(200), nullable=False, server_default=""),
    sa.Column("iteration", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("available_at", UTCDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
    # Held steps are not claimed (their run is paused); ``available_at`` keeps its deadline.
    sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("recoveries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output", JSONType, nullable=True),
    sa.Column("error", JSONType, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    # A waiting step: its timer, what wakes it, and what the store needs to know (a join).
    sa.Column("wait_until", UTCDateTime, nullable=True),
    sa.Column("waiting_for", sa.String(200), nullable=True),
    sa.Column("wait_data", JSONType, nullable=True),
    # -- migration 0018: the run's lane (``priority`` above is the run's too).
    sa.Column("lane", sa.String(40), nullable=False, server_default=""),
    sa.UniqueConstraint("run_id", "branch", "node_id", "iteration"),
    # The claim query: only claimable rows are indexed, so the index stays small however
    # much history accumulates. By priority and lane first: the claim reads the lanes off
    # the index (one probe each) and takes each lane's due steps in order (decision 0032).
    sa.Index(
        "ix_steps_claimable",
        "priority",
        "lane",
        "available_at",
        postgresql_where=sa.text(CLAIMABLE_SQL),
        sqlite_where=sa.text(CLAIMABLE_SQL),
    ),
    sa.Index(
        "ix_steps_leased",
        "lease_expires_at",
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    ),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("step_id", BigIntId, nullable=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", JSONType, nullable=True),
    sa.Column("actor", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "run_id", "id"),
)

# -- flow control (migration 0006) -------------------------------------------------------------

signals = sa.Table(
    "signals",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("payload", JSONType, nullable=True),
    sa.Column("sent_by", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("consumed_at", UTCDateTime, nullable=True),
    sa.Column("step_id", BigIntId, nullable=True),
    sa.Index(None, "run_id", "consumed_at"),
)

#: Branches of forks (parallel branches, map items) and child runs of sub-workflow steps.
#: ``key`` is the ``steps.branch`` value of the branch's steps.
branches = sa.Table(
    "branches",
    metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("parent_step_id", BigIntId, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # parallel | map | child
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("item", JSONType, nullable=True),
    sa.Column("start_node", sa.String(64), nullable=False),
    sa.Column("start_type", sa.String(128), nullable=False),
    # pending (not started: max_concurrency) | running | succeeded | failed | cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("output", JSONType, nullable=True),
    sa.Column("error", JSONType, nullable=True),
    sa.Column("child_run_id", sa.String(40), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Index(None, "parent_step_id", "status", "idx"),
    sa.Index(None, "child_run_id"),
)

# -- security (migration 0004) ----------------------------------------------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("username", sa.String(128), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="SET NULL")),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("family_id", sa.String(40), nullable=False),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE")),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Index(None, "family_id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("target_type", sa.String(40), nullable=True),
    sa.Column("target_id", sa.String(200), nullable=True),
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detail", JSONType, nullable=True),
    sa.Index(None, "actor", "id"),
    sa.Index(None, "action", "id"),
    sa.Index(None, "at"),
)

# -- credentials (migration 0005) -------------------------------------------------------------

#: The vault: a credential's data is only ever stored encrypted (AES-256-GCM, bound to the
#: row's id and type); ``key_id`` names the vault key that encrypted it (a fingerprint).
credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    #: Origins (``scheme://host[:port]``) the credential may be sent to (migration 0007).
    sa.Column("allowed_origins", JSONType, nullable=True),
)

# -- failed logins (migration 0007) --------------------------------------------------------

#: Failed password logins per throttle key (a username and client, or a client), kept in the
#: database so every API process sees the same counts.
login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("first_at", UTCDateTime, nullable=False),
    sa.Column("last_at", UTCDateTime, nullable=False),
)

# -- provider quotas (migrations 0009, 0010) ----------------------------------------------

#: One row per quota key (``credential:<name>``, ``node_type:<type>``), shared by every
#: worker: a rate's token bucket and a concurrency limit's queue; a take locks the row,
#: decides, writes (``store/quotas.py``).
quotas = sa.Table(
    "quotas",
    metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    # The rate (both NULL: the quota only limits concurrency).
    sa.Column("tokens", sa.Integer, nullable=True),
    sa.Column("per_s", sa.Float, nullable=True),
    sa.Column("burst", sa.Integer, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("available", sa.Float, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("paused_until", UTCDateTime, nullable=True),
    #: The end of the retry slots handed to refused steps (domain.quotas.take).
    sa.Column("queue_until", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The concurrency limit (NULL: none), the moving average of how long a step holds a
    # slot, and the end of the queue slots handed to steps that found none (domain.quotas.admit).
    sa.Column("concurrency", sa.Integer, nullable=True),
    sa.Column("hold_s", sa.Float, nullable=False, server_default="1.0"),
    sa.Column("slot_queue_until", UTCDateTime, nullable=True),
)

#: The slots of concurrency limits: one row per step holding one. A slot counts only while
#: its step is ``running`` under the same ``claims`` with a live lease, so a completion, a
#: failure, a cancel, a timeout or an expired lease frees it without touching this table;
#: rows that stopped counting are deleted by the next take of their key (decision 0023).
quota_slots = sa.Table(
    "quota_slots",
    metadata,
    sa.Column(
        "key", sa.String(80), sa.ForeignKey("quotas.key", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("step_id", BigIntId, primary_key=True),
    sa.Column("claims", sa.Integer, nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
)

# -- webhook triggers (migration 0012) -----------------------------------------------------

#: Hooks (``store/hooks.py``): a public URL (the unguessable id, or a readable path) that
#: starts runs of a workflow's latest version; ``config`` is a ``domain.hooks.HookConfig``.
hooks = sa.Table(
    "hooks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("path", sa.String(100), nullable=True, unique=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("config", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
)

#: Delivery ids seen by a hook within its dedupe window: ``first_at`` names the window, and
#: with the id's hash it makes the run's idempotency key, so a repeat finds the first run.
hook_deliveries = sa.Table(
    "hook_deliveries",
    metadata,
    sa.Column(
        "hook_id", sa.String(40), sa.ForeignKey("hooks.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("delivery_key", sa.String(64), primary_key=True),
    sa.Column("first_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_hook_deliveries_expires", "hook_id", "expires_at"),
)


# -- drafts (migration 0014; ordered JSON: 0022) -----------------------------------------

#: One shared draft per workflow: the whole document as it is now (``{"definition",
#: "layout"}``) and its ``revision``, the ETag editors send back (optimistic concurrency).
drafts = sa.Table(
    "drafts",
    metadata,
    sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id"), primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("base_version", sa.Integer, nullable=True),
    sa.Column("document", OrderedJSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
)

#: A draft's undo history: each step's forward JSON Patch and its inverse (not copies of the
#: document), in ``seq`` order; ``undone`` steps are the redo tail, dropped by a new edit.
draft_steps = sa.Table(
    "draft_steps",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("forward", OrderedJSONType, nullable=False),
    sa.Column("inverse", OrderedJSONType, nullable=False),
    sa.Column("summary", sa.String(500), nullable=False),
    sa.Column("actor", sa.String(200), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("undone", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("workflow_id", "seq"),
)

# -- the change feed (migration 0021) ----------------------------------------------------------

#: Changes for other processes on SQLite, which cannot notify them (decision 0037): a
#: workflow row changed (``kind`` "workflow", the id, appended in the changing transaction)
#: or a draft changed (``kind`` "draft", the event's JSON, appended after it committed).
#: ``seq`` never repeats (AUTOINCREMENT) and has no gaps below the newest row (SQLite
#: serialises writers), so a reader that finds one knows it missed rows the writers trimmed.
#: ``origin`` is the writing process's store, which skips its own rows. PostgreSQL NOTIFYs
#: instead and leaves the table empty.
change_feed = sa.Table(
    "change_feed",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("origin", sa.String(32), nullable=False),
    sqlite_autoincrement=True,
)

# -- campaigns (migration 0015) ------------------------------------------------------------

#: A batch of runs started together (``store/campaigns.py``): one run per item, all of one
#: workflow version. ``status`` is what an operator made of it (running, paused, cancelled);
#: "completed" is read from the counters. ``checksum`` is the items' digest: a re-post of
#: the same campaign with the same items answers the campaign, other items are a conflict.
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("workflow_version", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("item_key", sa.String(500), nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # -- migration 0018: its runs' priority, and its share of the workers among the
    # campaigns of that priority (decision 0032).
    sa.Column("priority", sa.Integer, nullable=False, server_default=str(BULK)),
    sa.Column("weight", sa.Integer, nullable=False, server_default=str(DEFAULT_WEIGHT)),
    # The template of its runs' concurrency keys (their limits are quotas).
    sa.Column("concurrency_key", sa.String(500), nullable=True),
    # -- migration 0017: runs of the campaign deleted by retention. The counters by status
    # keep counting them (a campaign's history outlives its runs: decision 0031).
    sa.Column("pruned", sa.Integer, nullable=False, server_default="0"),
    # -- migration 0019: its limits as last set (``CampaignLimits.as_json``); the quota rows
    # are what the workers take from, and go when the campaign has ended.
    sa.Column("limits", JSONType, nullable=True),
    sa.UniqueConstraint("workflow_id", "name"),
)

#: Stripes of a campaign's counters on PostgreSQL: the counting trigger picks one by backend
#: (connection), so two workers finishing runs of one campaign do not queue on one row. SQLite
#: has one writer: one stripe.
COUNT_STRIPES = 16

#: Runs of a campaign by status, kept by the ``runs_campaign_count`` trigger of migration
#: 0015 in the transaction that changes a run's status, whoever changes it (decision 0028).
#: A campaign's count of a status is the sum over its stripes (some may be negative).
campaign_counts = sa.Table(
    "campaign_counts",
    metadata,
    sa.Column(
        "campaign_id",
        sa.String(40),
        sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("stripe", sa.Integer, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)

# -- leases (migration 0017) -------------------------------------------------------------

#: Loops of which at most one runs at a time across every process (the periodic pruner):
#: a process holds ``name`` while ``expires_at`` is ahead and ``owner`` is its id; it takes
#: the row by compare-and-set once it has expired (``store/retention.py``).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(100), nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# -- event triggers, debounce and throttle (migration 0016) ------------------------------------

#: Event triggers (``store/triggers.py``): start a run of ``workflow_id`` when a run of
#: ``source_workflow_id`` ends (kind ``run``) or when the event ``event`` is posted (kind
#: ``event``); ``config`` is a ``domain.triggers.TriggerConfig``. A run-end trigger fires
#: for run ends after ``since_event_id`` (the newest event when it was made).
event_triggers = sa.Table(
    "event_triggers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("source_workflow_id", sa.String(40), nullable=True),
    sa.Column("event", sa.String(100), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("config", JSONType, nullable=False),
    sa.Column("since_event_id", BigIntId, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    # The dispatcher's "any run trigger?" check and the intake's "who listens to this
    # name?" read only these indexes.
    sa.Index("ix_event_triggers_kind", "kind", "enabled", "source_workflow_id"),
    sa.Index("ix_event_triggers_event", "event"),
)

#: Positions in the event feed of the loops that read it (``run_end``: the last run_events
#: id whose run ends were dispatched). Moved by compare-and-set: two dispatchers that read
#: the same events start each target once (its idempotency key), and the cursor moves once.
trigger_cursors = sa.Table(
    "trigger_cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", BigIntId, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

#: Debounced starts: one row per (source, key) while a burst lasts; each event replaces the
#: input and moves ``fire_at``; a loop claims due rows (``claimed_until``), starts the run
#: with an idempotency key naming the burst, and deletes the row if no event came since.
trigger_debounces = sa.Table(
    "trigger_debounces",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("workflow_id", sa.String(40), nullable=False),
    sa.Column("input", JSONType, nullable=True),
    sa.Column("actor", sa.String(200), nullable=True),
    sa.Column("fire_at", UTCDateTime, nullable=False),
    sa.Column("burst", sa.Integer, nullable=False, server_default="1"),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("source", "key"),
    sa.Index("ix_trigger_debounces_fire_at", "fire_at"),
)

#: Throttle windows: starts let through (``used``) and events dropped (``dropped``) per
#: (source, key) in the window that began at ``window_start``.
trigger_throttles = sa.Table(
    "trigger_throttles",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("window_start", UTCDateTime, nullable=False),
    sa.Column("used", sa.Integer, nullable=False),
    sa.Column("dropped", sa.Integer, nullable=False, server_default="0"),
)

# -- schedules (migration 0013) --------------------------------------------------------------

#: Schedules (``store/schedules.py``): a timetable (``cron`` in ``timezone``, or ``every_s``
#: from ``anchor_at``) that starts runs of a workflow's latest version. ``next_tick_at`` is the
#: next tick's identity, ``next_fire_at`` when it is due (tick + jitter): the due query reads
#: the partial index on it, so a poll costs the same with one schedule or ten thousand.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("every_s", sa.Integer, nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("anchor_at", UTCDateTime, nullable=False),
    sa.Column("input", JSONType, nullable=True),
    sa.Column("catch_up", sa.String(16), nullable=False),
    sa.Column("max_catch_up", sa.Integer, nullable=False),
    sa.Column("jitter_s", sa.Float, nullable=False),
    sa.Column("overlap", sa.String(16), nullable=False),
    sa.Column("misfire_grace_s", sa.Float, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("next_tick_at", UTCDateTime, nullable=True),
    sa.Column("next_fire_at", UTCDateTime, nullable=True),
    sa.Column("last_tick_at", UTCDateTime, nullable=True),
    sa.Column("last_run_id", sa.String(40), nullable=True),
    sa.Column("fired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("missed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Index(None, "workflow_id"),
    sa.Index(
        "ix_schedules_due",
        "next_fire_at",
        postgresql_where=sa.text("enabled"),
        sqlite_where=sa.text("enabled"),
    ),
)

#: Fired (or skipped) ticks. The primary key (schedule, tick) is what makes a tick fire once:
#: a worker inserts it in the transaction that starts the tick's run, and a worker that
#: finds it taken starts nothing.
schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column(
        "schedule_id",
        sa.String(40),
        sa.ForeignKey("schedules.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tick_at", UTCDateTime, primary_key=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(40), nullable=True),
    sa.Column("reason", sa.String(200), nullable=True),
    sa.Column("manual", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("fired_at", UTCDateTime, nullable=False),
    sa.Index(None, "fired_at"),
)
