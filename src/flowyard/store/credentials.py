"""Credentials in the SQL store: metadata and ciphertext only (the vault encrypts and
decrypts; the store never sees a secret)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.credentials import CredentialRecord, CredentialType, StoredCredential
from flowyard.domain.errors import Conflict, NotFound
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.schema import credentials

#: Columns ``update_credential`` may change.
UPDATABLE = frozenset({"ciphertext", "key_id", "description", "allowed_origins"})


def _origins(value: Any) -> tuple[str, ...] | None:
    """The stored origins; anything but a list of strings (a hand-edited row) reads as
    unset, which refuses the credential at use rather than guessing."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _stored(row: Row[Any]) -> StoredCredential:
    record = CredentialRecord(
        row.id,
        row.name,
        CredentialType(row.type),
        row.description,
        row.key_id,
        row.created_at,
        row.updated_at,
        row.created_by,
        row.version,
        _origins(row.allowed_origins),
    )
    return StoredCredential(record, bytes(row.ciphertext))


def _by_ref(ref: str) -> sa.ColumnElement[bool]:
    return sa.or_(credentials.c.id == ref, credentials.c.name == ref)


class CredentialOps(SqlBase):
    """The ``credentials`` table; a write given an audit entry writes it with the change (never
    with a value)."""

    async def create_credential(
        self, record: CredentialRecord, ciphertext: bytes, *, audit: AuditEntry | None = None
    ) -> CredentialRecord:
        """Insert a credential (Conflict when the name is taken)."""

        async def fn(conn: AsyncConnection) -> CredentialRecord:
            note_target(audit, "credential", record.id)
            await conn.execute(
                credentials.insert().values(
                    id=record.id,
                    name=record.name,
                    type=record.type.value,
                    description=record.description,
                    ciphertext=ciphertext,
                    key_id=record.key_id,
                    version=record.version,
                    created_by=record.created_by,
                    created_at=record.created_at,
                    updated_at=record.updated_at,
                    allowed_origins=(
                        None if record.allowed_origins is None else list(record.allowed_origins)
                    ),
                )
            )
            return record

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise Conflict(f"a credential named {record.name!r} already exists") from exc

    async def get_credential(self, ref: str) -> StoredCredential:
        """A credential by id or name (NotFound)."""

        async def fn(conn: AsyncConnection) -> StoredCredential:
            row = (await conn.execute(sa.select(credentials).where(_by_ref(ref)))).first()
            if row is None:
                raise NotFound(f"credential {ref!r} not found")
            return _stored(row)

        return await self._tx(fn, write=False)

    async def list_credentials(
        self, *, limit: int = 50, after: str | None = None, type: CredentialType | None = None
    ) -> list[StoredCredential]:
        """Credentials by name, after a name cursor, optionally of one type."""
        query = sa.select(credentials).order_by(credentials.c.name).limit(limit)
        if after is not None:
            query = query.where(credentials.c.name > after)
        if type is not None:
            query = query.where(credentials.c.type == type.value)

        async def fn(conn: AsyncConnection) -> list[StoredCredential]:
            return [_stored(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def update_credential(
        self,
        cred_id: str,
        changes: dict[str, Any],
        now: datetime,
        *,
        expected_version: int | None = None,
        audit: AuditEntry | None = None,
    ) -> StoredCredential:
        """Change ``ciphertext`` + ``key_id``, ``description`` and/or ``allowed_origins`` (a
        list, or None); the version goes up by one (NotFound; Conflict when
        ``expected_version`` is stale)."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")

        async def fn(conn: AsyncConnection) -> StoredCredential:
            row = (
                await conn.execute(
                    sa.select(credentials.c.id, credentials.c.name, credentials.c.version)
                    .where(credentials.c.id == cred_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFound(f"credential {cred_id!r} not found")
            note_target(audit, "credential", row.id)
            if expected_version is not None and expected_version != row.version:
                raise Conflict(
                    f"credential {row.name!r} is at version {row.version}, not {expected_version}",
                    detail={"current_version": row.version},
                )
            updated = (
                await conn.execute(
                    credentials.update()
                    .where(credentials.c.id == cred_id)
                    .values(**changes, version=row.version + 1, updated_at=now)
                    .returning(*credentials.c)
                )
            ).one()
            return _stored(updated)

        return await self._tx(fn, audit=audit)

    async def delete_credential(self, cred_id: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a credential (NotFound)."""

        async def fn(conn: AsyncConnection) -> None:
            note_target(audit, "credential", cred_id)
            deleted = await conn.execute(credentials.delete().where(credentials.c.id == cred_id))
            if deleted.rowcount == 0:
                raise NotFound(f"credential {cred_id!r} not found")

        await self._tx(fn, audit=audit)

    async def reencrypt_credentials(
        self,
        fn: Callable[[StoredCredential], tuple[bytes, str] | None],
        *,
        audit: AuditEntry | None = None,
    ) -> int:
        """Key rotation: in ONE transaction, give every credential to ``fn`` and store the
        ``(ciphertext, key_id)`` it returns (None: leave the row). If ``fn`` raises, nothing
        changes. Versions and update times are kept (the data did not change). Returns how
        many rows were re-encrypted."""

        async def tx(conn: AsyncConnection) -> int:
            rows = await conn.execute(
                sa.select(credentials).order_by(credentials.c.id).with_for_update()
            )
            count = 0
            for row in rows.all():
                result = fn(_stored(row))
                if result is None:
                    continue
                ciphertext, key_id = result
                await conn.execute(
                    credentials.update()
                    .where(credentials.c.id == row.id)
                    .values(ciphertext=ciphertext, key_id=key_id)
                )
                count += 1
            if audit is not None:
                audit.detail = {**(audit.detail or {}), "reencrypted": count}
            return count

        return await self._tx(tx, audit=audit)
