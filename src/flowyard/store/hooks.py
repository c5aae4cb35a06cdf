"""Webhook triggers in the SQL store: the ``hooks`` rows (managed by editors, audited) and
the delivery ids each hook remembers for its dedupe window."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.hooks import HookChange, HookConfig, HookRecord, NewHook, new_hook_id
from flowyard.domain.triggers import hook_source
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.schema import (
    hook_deliveries,
    hooks,
    trigger_debounces,
    trigger_throttles,
    workflows,
)

#: Expired delivery ids a delivery deletes at most (each is deleted once, so the table
#: stays as small as the deliveries of the live windows).
_PURGE_BATCH = 100

_COLUMNS = (*hooks.c, workflows.c.name.label("workflow_name"))


def _record(row: Row[Any]) -> HookRecord:
    return HookRecord(
        id=row.id,
        name=row.name,
        workflow_id=row.workflow_id,
        workflow_name=row.workflow_name,
        path=row.path,
        enabled=row.enabled,
        config=HookConfig.model_validate(row.config),
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


def _select() -> sa.Select[Any]:
    return sa.select(*_COLUMNS).join(workflows, workflows.c.id == hooks.c.workflow_id)


def _taken(exc: IntegrityError, name: str, path: str | None) -> Conflict:
    text = str(exc.orig).lower()
    if path is not None and "path" in text:
        return Conflict(f"another hook has the path {path!r}")
    return Conflict(f"a hook named {name!r} exists")


class HookOps(SqlBase):
    """The ``hooks`` and ``hook_deliveries`` tables."""

    async def create_hook(
        self, new: NewHook, now: datetime, *, audit: AuditEntry | None = None
    ) -> HookRecord:
        """Store a new hook with a fresh id (Conflict: its name or path is taken)."""
        hook_id = new_hook_id()

        async def fn(conn: AsyncConnection) -> HookRecord:
            note_target(audit, "hook", new.name)
            await conn.execute(
                hooks.insert().values(
                    id=hook_id,
                    name=new.name,
                    workflow_id=new.workflow_id,
                    path=new.path,
                    enabled=new.enabled,
                    config=new.config.model_dump(mode="json"),
                    created_at=now,
                    updated_at=now,
                    created_by=new.created_by,
                )
            )
            return _record((await conn.execute(_select().where(hooks.c.id == hook_id))).one())

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise _taken(exc, new.name, new.path) from None

    async def get_hook(self, ref: str) -> HookRecord:
        """A hook by id or name (NotFound)."""

        async def fn(conn: AsyncConnection) -> HookRecord:
            query = _select().where(sa.or_(hooks.c.id == ref, hooks.c.name == ref))
            row = (await conn.execute(query)).first()
            if row is None:
                raise NotFound(f"hook {ref!r} not found")
            return _record(row)

        return await self._tx(fn, write=False)

    async def get_hook_by_path(self, path: str) -> HookRecord:
        """The hook with this readable path (NotFound)."""

        async def fn(conn: AsyncConnection) -> HookRecord:
            row = (await conn.execute(_select().where(hooks.c.path == path))).first()
            if row is None:
                raise NotFound(f"no hook at path {path!r}")
            return _record(row)

        return await self._tx(fn, write=False)

    async def list_hooks(
        self, *, workflow_id: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[HookRecord]:
        """Hooks by name, after a name cursor, optionally of one workflow."""

        async def fn(conn: AsyncConnection) -> list[HookRecord]:
            query = _select().order_by(hooks.c.name).limit(limit)
            if workflow_id is not None:
                query = query.where(hooks.c.workflow_id == workflow_id)
            if after is not None:
                query = query.where(hooks.c.name > after)
            return [_record(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def update_hook(
        self, ref: str, change: HookChange, now: datetime, *, audit: AuditEntry | None = None
    ) -> HookRecord:
        """Apply ``change`` to the hook ``ref`` (NotFound; Conflict: the path is taken)."""
        values: dict[str, Any] = {"updated_at": now}
        if change.enabled is not None:
            values["enabled"] = change.enabled
        if change.clear_path:
            values["path"] = None
        elif change.path is not None:
            values["path"] = change.path
        if change.config is not None:
            values["config"] = change.config.model_dump(mode="json")
        if change.workflow_id is not None:
            values["workflow_id"] = change.workflow_id

        async def fn(conn: AsyncConnection) -> HookRecord:
            row = (
                await conn.execute(
                    sa.select(hooks.c.id, hooks.c.name)
                    .where(sa.or_(hooks.c.id == ref, hooks.c.name == ref))
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFound(f"hook {ref!r} not found")
            note_target(audit, "hook", row.name)
            await conn.execute(hooks.update().where(hooks.c.id == row.id).values(**values))
            return _record((await conn.execute(_select().where(hooks.c.id == row.id))).one())

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise _taken(exc, ref, change.path) from None

    async def delete_hook(self, ref: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a hook, its remembered deliveries, its pending debounced starts and its
        throttle windows (NotFound)."""

        async def fn(conn: AsyncConnection) -> None:
            row = (
                await conn.execute(
                    sa.select(hooks.c.id, hooks.c.name).where(
                        sa.or_(hooks.c.id == ref, hooks.c.name == ref)
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"hook {ref!r} not found")
            note_target(audit, "hook", row.name)
            # Explicitly, not by the foreign key's cascade alone: SQLite enforces it only with
            # its pragma on, and a store opened without it must not keep orphans.
            await conn.execute(hook_deliveries.delete().where(hook_deliveries.c.hook_id == row.id))
            # Its pending debounced starts and throttle windows go with it (no foreign key:
            # the rows are shared with event triggers, keyed by a source string).
            source = hook_source(row.id)
            await conn.execute(
                trigger_debounces.delete().where(trigger_debounces.c.source == source)
            )
            await conn.execute(
                trigger_throttles.delete().where(trigger_throttles.c.source == source)
            )
            await conn.execute(hooks.delete().where(hooks.c.id == row.id))

        await self._tx(fn, audit=audit)

    async def delivery_window(
        self, hook_id: str, delivery_key: str, now: datetime
    ) -> datetime | None:
        """When the window of a remembered delivery id began (None: not remembered, or its
        window has passed)."""

        async def fn(conn: AsyncConnection) -> datetime | None:
            row = (
                await conn.execute(
                    sa.select(hook_deliveries.c.first_at).where(
                        hook_deliveries.c.hook_id == hook_id,
                        hook_deliveries.c.delivery_key == delivery_key,
                        hook_deliveries.c.expires_at > now,
                    )
                )
            ).first()
            return None if row is None else row.first_at

        return await self._tx(fn, write=False)

    async def note_delivery(
        self, hook_id: str, delivery_key: str, now: datetime, window_s: int
    ) -> datetime:
        """Remember a delivery id for ``window_s`` seconds from its first delivery: returns
        when its window began (the same for every repeat within the window; a new window
        begins once it expired). A few of the hook's expired ids are forgotten."""

        async def fn(conn: AsyncConnection) -> datetime:
            expired = (
                sa.select(hook_deliveries.c.delivery_key)
                .where(
                    hook_deliveries.c.hook_id == hook_id,
                    hook_deliveries.c.expires_at <= now,
                    hook_deliveries.c.delivery_key != delivery_key,
                )
                .limit(_PURGE_BATCH)
            )
            await conn.execute(
                hook_deliveries.delete().where(
                    hook_deliveries.c.hook_id == hook_id,
                    hook_deliveries.c.delivery_key.in_(expired),
                )
            )
            # Two deliveries of one id at once: the second's insert waits for the first's
            # row (PostgreSQL) or its transaction (SQLite), then reads it.
            await conn.execute(
                self._insert_ignore(hook_deliveries).values(
                    hook_id=hook_id,
                    delivery_key=delivery_key,
                    first_at=now,
                    expires_at=now + timedelta(seconds=window_s),
                )
            )
            key = (hook_deliveries.c.hook_id == hook_id) & (
                hook_deliveries.c.delivery_key == delivery_key
            )
            row = (
                await conn.execute(sa.select(hook_deliveries).where(key).with_for_update())
            ).one()
            if row.expires_at > now:
                first_at: datetime = row.first_at
                return first_at
            await conn.execute(
                hook_deliveries.update()
                .where(key)
                .values(first_at=now, expires_at=now + timedelta(seconds=window_s))
            )
            return now

        return await self._tx(fn)
