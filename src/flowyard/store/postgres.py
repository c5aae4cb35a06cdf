"""PostgreSQL: for many workers on many machines (``FOR UPDATE SKIP LOCKED`` claiming)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from flowyard.domain.campaigns import CampaignItem, NewCampaign, SpooledItems, copy_field
from flowyard.domain.jsonvalue import loads_stored
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store import notify
from flowyard.store.campaigns import RUN_COLUMNS, STEP_COLUMNS
from flowyard.store.ports import EventListener
from flowyard.store.schema import COUNT_STRIPES
from flowyard.store.sql import SqlStore

#: serialization_failure, deadlock_detected, lock_not_available, admin/crash shutdown,
#: cannot_connect_now: worth retrying the transaction.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})


#: The newest id handed out by the event sequence (NULL before the first event).
_LAST_EVENT_ID = sa.text(
    "SELECT pg_sequence_last_value(pg_get_serial_sequence('run_events', 'id')::regclass)"
)
#: Transactions that may insert events: INSERT takes ROW EXCLUSIVE on the table while the
#: statement is parsed, before ``nextval`` hands out its id, and holds it until commit.
_EVENT_WRITERS = (
    "SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks"
    " WHERE locktype = 'relation' AND relation = 'run_events'::regclass"
    " AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()"
)
_WRITERS_AT_HORIZON = sa.text(_EVENT_WRITERS)
_STILL_OPEN = sa.text(_EVENT_WRITERS + " AND virtualtransaction = ANY(:open)")
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


#: asyncpg behind PgBouncer in transaction mode: no statement cache in asyncpg or in
#: SQLAlchemy's adapter, and unique names for the statements it still prepares (a server
#: connection is shared by many clients, so ``__asyncpg_stmt_1__`` would collide).
_POOLED_CONNECT_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: f"__flowyard_{uuid.uuid4().hex}__",
}


#: Sessions of this database waiting for a lock (row locks show as ``transactionid`` waits,
#: which pg_locks does not tie to a database; pg_stat_activity does).
_LOCK_WAITS = sa.text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


#: A start of at least this many runs refreshes the statistics of ``runs`` and ``steps``
#: when the runs started since they were gathered are this fraction of what they counted
#: (decision 0040): a 50,000-run start on a fresh database once, a chunked one ~10 times.
BULK_START = 1_000
STALE_FRACTION = 0.5

#: Arbitrary, fixed advisory-lock key that serialises schema migrations.
MIGRATION_LOCK_KEY = 0x666C6F77  # "flow"


#: The columns of a campaign run's COPY line: the id, the spool's three fields in their
#: order, then the campaign's constants (`PostgresStore._campaign_runs`).
_RUN_COPY_COLUMNS = (
    "id",
    "correlation_key",
    "limit_key",
    "input",
    "correlation_unique",
    "workflow_id",
    "workflow_version",
    "status",
    "vars",
    "campaign_id",
    "deadline_at",
    "priority",
    "lane",
    "created_at",
    "updated_at",
)
assert set(_RUN_COPY_COLUMNS) == set(RUN_COLUMNS)
#: A spool line whose correlation key is NULL starts with this.
_NO_KEY = "\\N\t"


def _copy_time(value: datetime) -> str:
    """A time as ``COPY`` text for ``timestamptz`` (ISO 8601 with its offset)."""
    return value.astimezone(UTC).isoformat()


class _Lines:
    """Lines for ``copy_to_table`` as an async iterable of buffers of ~256 kB each."""

    def __init__(self, lines: Sequence[str], size: int = 2048) -> None:
        self.lines = lines
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.lines), self.size):
            yield "".join(self.lines[i : i + self.size]).encode()


class PostgresStore(SqlStore):
    """The scaling store, on asyncpg."""

    dialect = "postgresql"
    count_stripes = COUNT_STRIPES

    async def _copy_text(
        self, conn: AsyncConnection, table: str, columns: Sequence[str], lines: Sequence[str]
    ) -> None:
        """``COPY`` of rows already in text format (one line each, fields escaped): no
        encoding per value in the client."""
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_to_table(
            table, source=_Lines(lines), columns=list(columns), format="text"
        )

    async def _campaign_runs(
        self,
        conn: AsyncConnection,
        new: NewCampaign,
        campaign_id: str,
        chunk: Sequence[CampaignItem],
        ids: Sequence[str],
        limit_keys: Sequence[str | None] | None,
        now: datetime,
    ) -> None:
        # The spool's lines are "correlation key TAB concurrency key TAB input" in COPY text
        # format already: a run's line is its id, that line and the campaign's constants
        # (the concurrency key goes in `limit_key`'s place, as its quota key when the
        # campaign limits each key, else it is \N).
        lines = chunk.lines if isinstance(chunk, SpooledItems) else SpooledItems.of(chunk).lines
        stamp = _copy_time(now)
        tail = "\t".join(
            [
                copy_field(new.workflow_id),
                str(new.workflow_version),
                RunStatus.PENDING.value,
                copy_field(json.dumps(new.vars, separators=(",", ":"), ensure_ascii=False)),
                copy_field(campaign_id),
                _copy_time(new.deadline_at) if new.deadline_at is not None else "\\N",
                str(new.priority),
                copy_field(campaign_id),
                stamp,
                stamp,
            ]
        )
        # `correlation_unique`: the campaign's, for a run that has a key.
        unique, plain = f"t\t{tail}\n", f"f\t{tail}\n"
        if not new.correlation_unique:
            unique = plain
        if limit_keys is not None:
            rows = []
            for run_id, line, key in zip(ids, lines, limit_keys, strict=True):
                correlation, _, rest = line.partition("\t")
                input_field = rest.partition("\t")[2]
                end = plain if correlation == "\\N" else unique
                rows.append(f"{run_id}\t{correlation}\t{copy_field(key)}\t{input_field}\t{end}")
        else:
            rows = [
                f"{run_id}\t{line}\t{plain if line.startswith(_NO_KEY) else unique}"
                for run_id, line in zip(ids, lines, strict=True)
            ]
        await self._copy_text(conn, "runs", _RUN_COPY_COLUMNS, rows)

    async def _campaign_first_steps(
        self,
        conn: AsyncConnection,
        new: NewCampaign,
        campaign_id: str,
        ids: Sequence[str],
        now: datetime,
    ) -> None:
        stamp = _copy_time(now)
        tail = "\t".join(
            [
                copy_field(new.start_node),
                copy_field(new.start_node_type),
                "",
                "0",
                StepStatus.SCHEDULED.value,
                "0",
                str(new.priority),
                copy_field(campaign_id),
                stamp,
                "0",
                "0",
                "f",
                stamp,
            ]
        )
        await self._copy_text(conn, "steps", STEP_COLUMNS, [f"{r}\t{tail}\n" for r in ids])

    #: Where LISTEN connects (None: streams poll). ``url`` unless a pooler is in between.
    listen_url: str | None = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        pooler: str = "none",
        listen_url: str | None = None,
    ) -> PostgresStore:
        """Create the engine for ``postgresql+asyncpg://...``. ``pooler="transaction"``: the
        URL is a PgBouncer in transaction mode (decision 0035)."""
        pooled = pooler == "transaction"
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No pre-ping: a connection that died in the pool fails its first statement,
            # and `_tx` retries the transaction on a fresh one (tests/durability/
            # test_database_restart.py); pinging cost a round trip per transaction.
            pool_pre_ping=False,
            pool_recycle=1800,
            # The asyncpg dialect decodes json/jsonb with it too. jsonb never held a lone
            # surrogate or NaN, but older rows may be nested deeper than the API can serve.
            json_deserializer=loads_stored,
            # What a statement binds may be huge or secret (a step's output, a credential):
            # never in an error message or a log.
            hide_parameters=True,
            connect_args=_POOLED_CONNECT_ARGS if pooled else {},
        )
        # Reads run without BEGIN/COMMIT (two round trips less each). At READ COMMITTED,
        # PostgreSQL's level for every transaction here, each statement of a transaction
        # sees its own snapshot anyway: a read transaction made its statements no more
        # consistent with each other. Same pool; writes keep their transactions.
        # Behind a transaction pooler a statement outside a transaction may be parsed on one
        # server connection and executed on another: reads keep their transactions there.
        read = engine if pooled else engine.execution_options(isolation_level="AUTOCOMMIT")
        store = cls(url, engine, read)
        store.listen_url = listen_url if pooled else (listen_url or url)
        return store

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        # Transaction-scoped advisory lock: released by the commit that ends the upgrade, so a
        # second process waits, then finds the schema current and does nothing.
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )

    async def _refresh_statistics(self, conn: AsyncConnection, tables: Sequence[str]) -> None:
        # A fresh database has no statistics until autovacuum's first pass (a minute or
        # more): a large fork's lookups by (run, key) would scan every branch row meanwhile.
        # ANALYZE inside this transaction counts its own inserts.
        for table in tables:
            await conn.execute(sa.text(f"ANALYZE {table}"))

    async def _after_bulk_start(self, conn: AsyncConnection, started: int) -> None:
        # Without statistics (a fresh database, or one that grew since autovacuum last looked:
        # its pass comes a minute or more later) the planner takes `runs` and `steps` for
        # small tables, and the worker's statements cache plans that read every pending row
        # for each batch (the status indexes, not the primary key): a 30,000-run drain spent
        # 3.5 ms of server CPU per run instead of 0.6 (docs/benchmarks.md).
        if started < BULK_START:
            return
        known, changed = (
            await conn.execute(
                sa.text(
                    "SELECT c.reltuples, coalesce(s.n_mod_since_analyze, 0) FROM pg_class c"
                    " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
                    " WHERE c.oid = 'runs'::regclass"
                )
            )
        ).one()
        if known < 0 or changed + started >= STALE_FRACTION * known:
            await self._refresh_statistics(conn, ("runs", "steps"))

    def _insert_ignore(self, table: sa.Table) -> Any:
        return pg_insert(table).on_conflict_do_nothing()

    async def _lock_waits(self, conn: AsyncConnection) -> int | None:
        return int(await conn.scalar(_LOCK_WAITS) or 0)

    def _open_hint(self, exc: BaseException) -> str:
        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        url = sa.make_url(self.url)
        if sqlstate == "3D000":  # invalid_catalog_name
            return (
                f"create it first: createdb -h {url.host or 'localhost'} -p {url.port or 5432} "
                f"-U {url.username or 'postgres'} {url.database}"
            )
        if sqlstate in ("28P01", "28000"):  # invalid_password, invalid_authorization
            return "check the user name and password in the URL"
        if isinstance(exc, OSError):
            return "is PostgreSQL running and listening there?"
        return super()._open_hint(exc)

    def _is_transient(self, exc: DBAPIError) -> bool:
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate in TRANSIENT_SQLSTATES:
            return True
        return isinstance(exc, OperationalError) and sqlstate is None

    async def listen_for_events(self, wake: Callable[[], None]) -> EventListener | None:
        """``LISTEN flowyard_events`` on a connection of its own (see :mod:`flowyard.store.notify`);
        None when it cannot connect (logged): poll instead."""
        if self.listen_url is None:
            return None
        return await notify.listen_for_events(self.listen_url, wake)

    async def _workflow_changed(self, conn: AsyncConnection, workflow_id: str) -> None:
        # NOTIFY is transactional: sent at commit, dropped on rollback.
        await conn.execute(_NOTIFY, {"channel": notify.WORKFLOWS_CHANNEL, "payload": workflow_id})

    @property
    def records_draft_notices(self) -> bool:
        """False: draft changes are NOTIFYed after they commit (``announce_draft``)."""
        return False

    async def listen_for_changes(
        self, on_workflow: Callable[[str], None], on_draft: Callable[[str], None]
    ) -> EventListener | None:
        """``LISTEN`` on the workflows and drafts channels, on a connection of its own (the
        direct ``listen_url`` behind a transaction pooler; None without one)."""
        if self.listen_url is None:
            return None
        handlers = {notify.WORKFLOWS_CHANNEL: on_workflow, notify.DRAFTS_CHANNEL: on_draft}
        return await notify.listen(self.listen_url, handlers, what="workflow and draft changes")

    async def announce_draft(self, payload: str) -> bool:
        """``NOTIFY flowyard_drafts`` (its own short transaction); False, deliver in-process,
        when nobody can LISTEN (behind a transaction pooler without ``listen_url``)."""
        if self.listen_url is None:
            return False
        if len(payload.encode()) > notify.MAX_PAYLOAD_BYTES:
            raise ValueError("a draft change's notification must stay under 8,000 bytes")

        async def fn(conn: AsyncConnection) -> None:
            await conn.execute(_NOTIFY, {"channel": notify.DRAFTS_CHANNEL, "payload": payload})

        await self._tx(fn)
        return True

    #: How long :meth:`event_horizon` waits for open event-writing transactions.
    horizon_wait_s = 2.0

    async def event_horizon(self) -> int | None:
        """Ids come from a sequence, so a transaction can commit id 7 while the one holding
        id 6 is still open. Read the newest id handed out (S), then the transactions that
        could hold an id <= S (they hold ROW EXCLUSIVE on ``run_events``), and wait until
        those have ended: then every id <= S is committed or rolled back. Transactions that
        start later get ids > S and are not waited for. None if they stay open too long."""
        async with self._read.connect() as conn:
            last = await conn.scalar(_LAST_EVENT_ID)
            open_ = list(await conn.scalar(_WRITERS_AT_HORIZON) or [])
            deadline = time.monotonic() + self.horizon_wait_s
            delay = 0.002
            while open_:
                await conn.rollback()
                if time.monotonic() > deadline:
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
                open_ = list(await conn.scalar(_STILL_OPEN, {"open": open_}) or [])
            await conn.rollback()
        return int(last or 0)
