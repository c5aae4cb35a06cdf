"""Users, API keys, refresh tokens and the audit log in the SQL store."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import (
    ApiKeyRecord,
    AuditEntry,
    AuditRecord,
    RefreshTokenRecord,
    Role,
    UserRecord,
)
from flowyard.domain.errors import Conflict, NotFound
from flowyard.store.audit import audit_row, note_target
from flowyard.store.base import SqlBase
from flowyard.store.schema import api_keys, audit_log, refresh_tokens, users


def _user(row: Row[Any]) -> UserRecord:
    return UserRecord(
        row.id,
        row.username,
        row.password_hash,
        Role(row.role),
        bool(row.disabled),
        row.created_at,
        row.updated_at,
    )


def _key(row: Row[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        row.id,
        row.prefix,
        row.hash,
        row.name,
        Role(row.role),
        row.user_id,
        row.expires_at,
        row.last_used_at,
        row.revoked_at,
        row.created_at,
    )


def _audit(row: Row[Any]) -> AuditRecord:
    return AuditRecord(
        row.id,
        row.at,
        row.actor,
        row.action,
        row.target_type,
        row.target_id,
        row.source_ip,
        row.outcome,
        row.detail,
    )


async def _lock_user(conn: AsyncConnection, user_id: str, *, shared: bool) -> None:
    """Lock a user's row, the point where a session's rotation and its endings meet: a
    refresh rotation locks it shared, an ending (logout, new password, disabling, deleting)
    exclusively. On PostgreSQL an ending's update of ``refresh_tokens`` would otherwise take
    its snapshot before a rotation running at the same time commits, and miss the token the
    rotation inserts: a session just ended would get a live refresh token. SQLite renders
    no lock: its writers run one at a time anyway."""
    await conn.execute(
        sa.select(users.c.id).where(users.c.id == user_id).with_for_update(read=shared)
    )


def _deny(entry: AuditEntry | None, reason: str) -> None:
    """Mark the audit entry of a refused token exchange."""
    if entry is not None:
        entry.outcome = "denied"
        entry.detail = {"reason": reason}


class AuthOps(SqlBase):
    """Security persistence; a write given an audit entry writes it with the change (see
    ``_tx``)."""

    # -- users -----------------------------------------------------------------------------

    async def create_user(
        self,
        user_id: str,
        username: str,
        password_hash: str,
        role: Role,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> UserRecord:
        """Insert a user (Conflict when the name is taken; the refusal's audit entry then
        names the existing user)."""

        async def fn(conn: AsyncConnection) -> UserRecord:
            note_target(audit, "user", user_id)
            values = {
                "id": user_id,
                "username": username,
                "password_hash": password_hash,
                "role": role.value,
                "disabled": False,
                "created_at": now,
                "updated_at": now,
            }
            await conn.execute(users.insert().values(**values))
            return UserRecord(user_id, username, password_hash, role, False, now, now)

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            # The refusal is about the user who has the name, not the id this insert made.
            existing: str | None
            try:
                existing = (await self.get_user_by_name(username)).id
            except NotFound:  # deleted since
                existing = None
            if audit is not None:
                audit.target_id = existing
            raise Conflict(f"a user named {username!r} already exists") from exc

    async def _one_user(self, where: Any, what: str) -> UserRecord:
        async def fn(conn: AsyncConnection) -> UserRecord:
            row = (await conn.execute(sa.select(users).where(where))).first()
            if row is None:
                raise NotFound(f"user {what} not found")
            return _user(row)

        return await self._tx(fn, write=False)

    async def get_user_by_id(self, user_id: str) -> UserRecord:
        """The user with this id (NotFound). Never matches a username."""
        return await self._one_user(users.c.id == user_id, repr(user_id))

    async def get_user_by_name(self, username: str) -> UserRecord:
        """The user with this username (NotFound). Never matches an id."""
        return await self._one_user(users.c.username == username, repr(username))

    async def session_user(self, user_id: str, family_id: str) -> tuple[UserRecord, bool]:
        """The user of an access token and whether its session (refresh-token family) is
        still live: the family has a token of this user that is not revoked. One query on
        the users primary key and the ``refresh_tokens.family_id`` index (NotFound)."""
        live = (
            sa.exists()
            .where(
                refresh_tokens.c.family_id == family_id,
                refresh_tokens.c.user_id == users.c.id,
                refresh_tokens.c.revoked_at.is_(None),
            )
            .label("live")
        )

        async def fn(conn: AsyncConnection) -> tuple[UserRecord, bool]:
            row = (await conn.execute(sa.select(users, live).where(users.c.id == user_id))).first()
            if row is None:
                raise NotFound(f"user {user_id!r} not found")
            return _user(row), bool(row.live)

        return await self._tx(fn, write=False)

    async def list_users(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        role: Role | None = None,
        disabled: bool | None = None,
    ) -> list[UserRecord]:
        """Users by name (every one without ``limit``), after a username cursor, optionally
        of one role and/or disabled or not."""
        query = sa.select(users).order_by(users.c.username).limit(limit)
        if after is not None:
            query = query.where(users.c.username > after)
        if role is not None:
            query = query.where(users.c.role == role.value)
        if disabled is not None:
            query = query.where(users.c.disabled == (sa.true() if disabled else sa.false()))

        async def fn(conn: AsyncConnection) -> list[UserRecord]:
            return [_user(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def count_users(self) -> int:
        """How many users exist."""

        async def fn(conn: AsyncConnection) -> int:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(users))).one()[0])

        return await self._tx(fn, write=False)

    async def _keep_an_admin(
        self, conn: AsyncConnection, user_id: str, action: Literal["demote", "disable", "delete"]
    ) -> None:
        """Conflict when ``user_id`` is the last enabled admin: nobody could administer users
        any more. Every enabled admin row is locked first (in id order, so two transactions
        never deadlock): of two admins demoting each other at once, the second waits, then
        sees the first change and is refused. SQLite serialises writers anyway."""
        admins = (
            await conn.execute(
                sa.select(users.c.id, users.c.username)
                .where(users.c.role == Role.ADMIN.value, users.c.disabled == sa.false())
                .order_by(users.c.id)
                .with_for_update()
            )
        ).all()
        if [a.id for a in admins] == [user_id]:
            raise Conflict(
                f"cannot {action} {admins[0].username!r}: it is the last enabled admin "
                "(make another user admin first)",
                detail={"reason": "last_admin"},
            )

    async def update_user(
        self,
        user_id: str,
        changes: dict[str, Any],
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> UserRecord:
        """Change ``role``, ``disabled`` or ``password_hash`` (NotFound); demoting or disabling
        the last enabled admin is a Conflict."""
        values = {k: (v.value if isinstance(v, Role) else v) for k, v in changes.items()}
        demote = "role" in changes and Role(changes["role"]) is not Role.ADMIN

        async def fn(conn: AsyncConnection) -> UserRecord:
            if demote or changes.get("disabled"):
                await self._keep_an_admin(conn, user_id, "demote" if demote else "disable")
            # After the admins (locked in id order by ``_keep_an_admin``): never the other way.
            await _lock_user(conn, user_id, shared=False)
            row = (
                await conn.execute(
                    users.update()
                    .where(users.c.id == user_id)
                    .values(**values, updated_at=now)
                    .returning(*users.c)
                )
            ).first()
            if row is None:
                raise NotFound(f"user {user_id!r} not found")
            if changes.get("disabled") or "password_hash" in changes:
                await conn.execute(
                    refresh_tokens.update()
                    .where(
                        refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None)
                    )
                    .values(revoked_at=now)
                )
            return _user(row)

        return await self._tx(fn, audit=audit)

    async def delete_user(
        self, user_id: str, *, now: datetime, audit: AuditEntry | None = None
    ) -> None:
        """Delete a user and its refresh tokens; its API keys are revoked at ``now`` (kept, with
        user_id cleared, for the audit trail). The last enabled admin cannot be deleted
        (Conflict)."""

        async def fn(conn: AsyncConnection) -> None:
            await self._keep_an_admin(conn, user_id, "delete")
            await _lock_user(conn, user_id, shared=False)
            await conn.execute(refresh_tokens.delete().where(refresh_tokens.c.user_id == user_id))
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.user_id == user_id)
                .values(
                    user_id=None,
                    revoked_at=sa.func.coalesce(api_keys.c.revoked_at, now),
                )
            )
            deleted = await conn.execute(users.delete().where(users.c.id == user_id))
            if deleted.rowcount == 0:
                raise NotFound(f"user {user_id!r} not found")

        await self._tx(fn, audit=audit)

    # -- API keys --------------------------------------------------------------------------

    async def create_api_key(
        self, key: ApiKeyRecord, *, audit: AuditEntry | None = None
    ) -> ApiKeyRecord:
        """Insert an API key record (its secret's hash only)."""

        async def fn(conn: AsyncConnection) -> ApiKeyRecord:
            note_target(audit, "api_key", key.id)
            await conn.execute(
                api_keys.insert().values(
                    id=key.id,
                    prefix=key.prefix,
                    hash=key.hash,
                    name=key.name,
                    role=key.role.value,
                    user_id=key.user_id,
                    expires_at=key.expires_at,
                    created_at=key.created_at,
                )
            )
            return key

        return await self._tx(fn, audit=audit)

    async def list_api_keys(
        self,
        *,
        limit: int | None = None,
        before: tuple[datetime, str] | None = None,
        role: Role | None = None,
        revoked: bool | None = None,
    ) -> list[ApiKeyRecord]:
        """API keys newest first (every one without ``limit``), after the ``(created_at,
        id)`` of the previous page's last key, optionally of one role and revoked or not."""
        query = (
            sa.select(api_keys).order_by(api_keys.c.created_at.desc(), api_keys.c.id).limit(limit)
        )
        if before is not None:
            at, key_id = before
            query = query.where(
                sa.or_(
                    api_keys.c.created_at < at,
                    sa.and_(api_keys.c.created_at == at, api_keys.c.id > key_id),
                )
            )
        if role is not None:
            query = query.where(api_keys.c.role == role.value)
        if revoked is not None:
            column = api_keys.c.revoked_at
            query = query.where(column.is_not(None) if revoked else column.is_(None))

        async def fn(conn: AsyncConnection) -> list[ApiKeyRecord]:
            return [_key(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def find_api_key(self, prefix: str) -> ApiKeyRecord | None:
        """The key with this prefix, if any."""

        async def fn(conn: AsyncConnection) -> ApiKeyRecord | None:
            row = (
                await conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix))
            ).first()
            return None if row is None else _key(row)

        return await self._tx(fn, write=False)

    async def find_api_key_and_owner(
        self, prefix: str
    ) -> tuple[ApiKeyRecord, UserRecord | None] | None:
        """The key with this prefix and the user it acts for (None: a key made by the CLI, or
        whose user was deleted), in one query; None without such a key."""
        owner = [c.label(f"owner_{c.name}") for c in users.c]
        query = (
            sa.select(api_keys, *owner)
            .select_from(api_keys.outerjoin(users, users.c.id == api_keys.c.user_id))
            .where(api_keys.c.prefix == prefix)
        )

        async def fn(conn: AsyncConnection) -> tuple[ApiKeyRecord, UserRecord | None] | None:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            if row.owner_id is None:
                return _key(row), None
            user = UserRecord(
                row.owner_id,
                row.owner_username,
                row.owner_password_hash,
                Role(row.owner_role),
                bool(row.owner_disabled),
                row.owner_created_at,
                row.owner_updated_at,
            )
            return _key(row), user

        return await self._tx(fn, write=False)

    async def revoke_api_key(
        self, key_id: str, now: datetime, *, audit: AuditEntry | None = None
    ) -> ApiKeyRecord:
        """Revoke a key (NotFound); revoking twice keeps the first time."""

        async def fn(conn: AsyncConnection) -> ApiKeyRecord:
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                raise NotFound(f"API key {key_id!r} not found")
            return _key(row)

        return await self._tx(fn, audit=audit)

    async def touch_api_key(self, key_id: str, now: datetime) -> None:
        """Record that a key was used (not audited: bookkeeping)."""

        async def fn(conn: AsyncConnection) -> None:
            await conn.execute(
                api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=now)
            )

        await self._tx(fn)

    # -- refresh tokens --------------------------------------------------------------------

    async def add_refresh_token(
        self, token: RefreshTokenRecord, *, audit: AuditEntry | None = None
    ) -> None:
        """Insert a refresh token."""

        async def fn(conn: AsyncConnection) -> None:
            await conn.execute(
                refresh_tokens.insert().values(
                    id=token.id,
                    family_id=token.family_id,
                    user_id=token.user_id,
                    expires_at=token.expires_at,
                )
            )

        await self._tx(fn, audit=audit)

    async def rotate_refresh_token(
        self,
        jti: str,
        new: RefreshTokenRecord,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> str:
        """Use refresh token ``jti`` and insert ``new`` in its family: ``"ok"``. A token
        already used revokes its whole family: ``"reused"``; unknown, revoked or expired:
        ``"invalid"`` (nothing inserted). Serialised with the endings of the session on the
        user's row (:func:`_lock_user`)."""
        token = sa.select(refresh_tokens).where(refresh_tokens.c.id == jti)

        async def fn(conn: AsyncConnection) -> str:
            owner = (await conn.execute(token.with_only_columns(refresh_tokens.c.user_id))).first()
            if owner is not None and owner.user_id is not None:
                # The user first, then the token: the order every ending takes too.
                await _lock_user(conn, owner.user_id, shared=True)
            row = (await conn.execute(token.with_for_update())).first()
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                _deny(audit, "invalid refresh token")
                return "invalid"
            if row.used_at is not None:
                await conn.execute(
                    refresh_tokens.update()
                    .where(refresh_tokens.c.family_id == row.family_id)
                    .values(revoked_at=now)
                )
                _deny(audit, "refresh token reused: family revoked")
                return "reused"
            await conn.execute(
                refresh_tokens.update().where(refresh_tokens.c.id == jti).values(used_at=now)
            )
            await conn.execute(
                refresh_tokens.insert().values(
                    id=new.id,
                    family_id=row.family_id,
                    user_id=row.user_id,
                    expires_at=new.expires_at,
                )
            )
            return "ok"

        return await self._tx(fn, audit=audit)

    async def revoke_refresh_family(
        self, family_id: str, now: datetime, *, audit: AuditEntry | None = None
    ) -> None:
        """Revoke every token of a family (logout)."""
        owner = (
            sa.select(refresh_tokens.c.user_id)
            .where(refresh_tokens.c.family_id == family_id)
            .limit(1)
        )

        async def fn(conn: AsyncConnection) -> None:
            user_id = (await conn.execute(owner)).scalar()
            if user_id is not None:
                await _lock_user(conn, user_id, shared=False)
            await conn.execute(
                refresh_tokens.update()
                .where(
                    refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None)
                )
                .values(revoked_at=now)
            )

        await self._tx(fn, audit=audit)

    async def prune_refresh_tokens(self, now: datetime, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` refresh tokens that are revoked or expired at ``now``; how
        many. Neither kind can be rotated again, nor keep a session live: either way a
        presented one is ``"invalid"``. A used token that has not expired is kept: presenting
        it again must still revoke its family. Rows another transaction holds are skipped
        (PostgreSQL), so pruning never waits for, or deadlocks with, a rotation or logout."""
        doomed = (
            sa.select(refresh_tokens.c.id)
            .where(
                sa.or_(refresh_tokens.c.revoked_at.is_not(None), refresh_tokens.c.expires_at <= now)
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

        async def fn(conn: AsyncConnection) -> int:
            deleted = await conn.execute(
                refresh_tokens.delete().where(refresh_tokens.c.id.in_(doomed))
            )
            return int(deleted.rowcount or 0)

        return await self._tx(fn)

    # -- audit -----------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry, now: datetime) -> None:
        """Write an entry on its own (a request that changed nothing: refused or failed)."""

        async def fn(conn: AsyncConnection) -> None:
            await conn.execute(audit_log.insert().values(**audit_row(entry, now)))

        await self._tx(fn)
        entry.written = True

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
        """Entries newest first, before an id cursor; ``target`` matches the target id or
        ``type:id``."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(audit_log.c.actor == actor)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if target is not None:
            # The type has no colon; an id may (a quota's key, ``credential:crm``).
            kind, _, ident = target.partition(":")
            cond = audit_log.c.target_id == target
            if ident:
                typed = sa.and_(audit_log.c.target_type == kind, audit_log.c.target_id == ident)
                cond = sa.or_(cond, typed)
            query = query.where(cond)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        if before is not None:
            query = query.where(audit_log.c.id < before)

        async def fn(conn: AsyncConnection) -> list[AuditRecord]:
            return [_audit(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)
