"""Credential use cases over the store and the vault: write-only management (reads return
metadata and a mask) and resolution by name, for workers only."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowyard.domain.auth import AuditEntry
from flowyard.domain.credentials import (
    NAME_PATTERN,
    CredentialRecord,
    CredentialType,
    ResolvedCredential,
    StoredCredential,
    is_valid_name,
    mask,
    new_credential_id,
    parse_data,
)
from flowyard.domain.errors import (
    InvalidInput,
    NotFound,
    PermanentError,
    Problem,
    StoreUnavailable,
    TransientError,
)
from flowyard.outbound import HTTP_STYLE, OriginError, normalize_origins, provider_origins
from flowyard.outbound.origins import OriginListError
from flowyard.security.vault import Rotation, Vault, VaultError
from flowyard.store.ports import CredentialStore

MAX_DESCRIPTION = 500


class _Unset:
    """Marker: an argument that was not given (None is a value: clear the description)."""


UNSET = _Unset()


@dataclass(frozen=True, slots=True)
class CredentialView:
    """What reads return: metadata and the masked data (None when it cannot be decrypted,
    ``problem`` then says why), and the origins the credential may be sent to (the
    provider's defaults when none were set; empty: none, it is refused everywhere)."""

    record: CredentialRecord
    data: dict[str, Any] | None
    problem: str | None = None
    allowed_origins: tuple[str, ...] = ()


def effective_origins(record: CredentialRecord, data: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The origins a credential may be sent to: those an admin set, else (provider types)
    the provider's own endpoints from its data, else none."""
    if record.allowed_origins is not None:
        return record.allowed_origins
    if data is None:
        return ()
    try:
        return tuple(provider_origins(record.type, data) or ())
    except (OriginError, KeyError, ValueError):
        return ()


def check_origins(type_: CredentialType, origins: Sequence[str] | None) -> list[str] | None:
    """Normalised ``origins`` (InvalidInput locating each bad one under
    ``/allowed_origins``); None (provider defaults) only for provider types."""
    if origins is None:
        if type_ in HTTP_STYLE:
            raise InvalidInput(
                f"a {type_.value} credential needs allowed_origins",
                [
                    Problem(
                        "/allowed_origins",
                        f"required for {type_.value} credentials: the origins "
                        "(scheme://host[:port], e.g. https://api.example.com) it may be sent to",
                        "missing",
                    )
                ],
            )
        return None
    try:
        return normalize_origins(origins)
    except OriginListError as exc:
        raise InvalidInput(
            "invalid allowed_origins",
            [Problem("/allowed_origins" + p.pointer, p.message, p.code) for p in exc.problems],
        ) from None


def _check_name(name: str) -> None:
    if not is_valid_name(name):
        raise InvalidInput(
            "invalid credential name",
            [Problem("/name", f"must match {NAME_PATTERN}", "string_pattern_mismatch")],
        )


def _check_description(description: str | None) -> None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise InvalidInput(
            "description too long",
            [Problem("/description", f"at most {MAX_DESCRIPTION} characters", "too_long")],
        )


class CredentialService:
    """Create, read (masked), replace and delete credentials; every value is encrypted before
    it reaches the store."""

    def __init__(
        self, store: CredentialStore, vault: Vault, *, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.vault = vault
        self.clock = clock

    def view(self, stored: StoredCredential) -> CredentialView:
        """The masked view of a row."""
        record = stored.record
        try:
            data = self.vault.open(stored)
        except VaultError as exc:
            return CredentialView(record, None, exc.message, effective_origins(record, None))
        return CredentialView(
            record, mask(record.type, data), None, effective_origins(record, data)
        )

    async def create(
        self,
        name: str,
        type_: CredentialType,
        data: Any,
        *,
        description: str | None = None,
        actor: str | None = None,
        allowed_origins: Sequence[str] | None = None,
        audit: AuditEntry | None = None,
    ) -> CredentialView:
        """Validate, encrypt and store a new credential (Conflict on a taken name).
        ``allowed_origins`` is required for the http-style types; provider types default to
        their own endpoints."""
        _check_name(name)
        _check_description(description)
        plain = parse_data(type_, data)
        origins = check_origins(type_, allowed_origins)
        cred_id = new_credential_id()
        ciphertext, key_id = self.vault.encrypt(cred_id, type_, plain)
        now = self.clock()
        record = CredentialRecord(
            cred_id,
            name,
            type_,
            description,
            key_id,
            now,
            now,
            actor,
            version=1,
            allowed_origins=None if origins is None else tuple(origins),
        )
        await self.store.create_credential(record, ciphertext, audit=audit)
        return CredentialView(record, mask(type_, plain), None, effective_origins(record, plain))

    async def get(self, ref: str) -> CredentialView:
        """A credential by name or id, masked (NotFound)."""
        return self.view(await self.store.get_credential(ref))

    async def list(
        self, *, limit: int = 50, after: str | None = None, type_: CredentialType | None = None
    ) -> list[CredentialView]:
        """Credentials by name, masked."""
        rows = await self.store.list_credentials(limit=limit, after=after, type=type_)
        return [self.view(row) for row in rows]

    async def update(
        self,
        ref: str,
        *,
        data: Any = None,
        description: str | _Unset | None = UNSET,
        allowed_origins: Sequence[str] | _Unset | None = UNSET,
        expected_version: int | None = None,
        audit: AuditEntry | None = None,
    ) -> CredentialView:
        """Replace the data (whole: secrets are never read back to merge), the description
        and/or the allowed origins (None: the provider's defaults, for provider types); the
        version goes up (NotFound; Conflict when ``expected_version`` is stale)."""
        current = await self.store.get_credential(ref)
        record = current.record
        changes: dict[str, Any] = {}
        plain: dict[str, Any] | None = None
        if data is not None:
            plain = parse_data(record.type, data)
            changes["ciphertext"], changes["key_id"] = self.vault.encrypt(
                record.id, record.type, plain
            )
        if not isinstance(description, _Unset):
            _check_description(description)
            changes["description"] = description
        if not isinstance(allowed_origins, _Unset):
            changes["allowed_origins"] = check_origins(record.type, allowed_origins)
        if not changes:
            raise InvalidInput(
                "nothing to change",
                [Problem("", "give data, description and/or allowed_origins", "empty")],
            )
        updated = await self.store.update_credential(
            record.id, changes, self.clock(), expected_version=expected_version, audit=audit
        )
        if plain is not None:
            return CredentialView(
                updated.record,
                mask(record.type, plain),
                None,
                effective_origins(updated.record, plain),
            )
        return self.view(updated)

    async def delete(self, ref: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a credential by name or id (NotFound). Workflows that reference it fail
        their step with ``credential.not_found`` from then on."""
        current = await self.store.get_credential(ref)
        await self.store.delete_credential(current.record.id, audit=audit)

    async def rotate_master_key(
        self, new_master: bytes, *, audit: AuditEntry | None = None
    ) -> Rotation:
        """Re-encrypt every credential under ``new_master`` in one transaction (see
        :meth:`Vault.rotate`)."""
        return await self.vault.rotate(self.store, new_master, audit=audit)

    def resolver(self, ttl_s: float = 5.0) -> CredentialResolver:
        """A resolver for workers."""
        return CredentialResolver(self.store, self.vault, ttl_s=ttl_s)


class CredentialResolver:
    """Decrypts credentials by name for node execution (a ``CredentialSource``).

    A decrypted credential is cached in this process for ``ttl_s`` seconds (default 5), so a
    burst of steps costs one query; a change or deletion reaches workers within that time.
    """

    def __init__(
        self,
        store: CredentialStore,
        vault: Vault,
        *,
        ttl_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.vault = vault
        self.ttl_s = ttl_s
        self.monotonic = monotonic
        self._cache: dict[str, tuple[float, ResolvedCredential]] = {}

    async def get(self, name: str) -> ResolvedCredential:
        """The credential called ``name``, decrypted. Fails the step permanently when it does
        not exist (``credential.not_found``) or cannot be decrypted
        (``credential.unreadable``); transiently when the database is unavailable."""
        now = self.monotonic()
        cached = self._cache.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            stored = await self.store.get_credential(name)
        except NotFound:
            self._cache.pop(name, None)
            raise PermanentError(
                f"no credential named {name!r}",
                error_type="credential.not_found",
                details={"credential": name},
            ) from None
        except StoreUnavailable as exc:
            raise TransientError(
                f"credential {name!r} could not be read: {exc.message}",
                error_type="credential.unavailable",
            ) from None
        if stored.record.name != name:  # an id was given: names only
            raise PermanentError(
                f"no credential named {name!r}",
                error_type="credential.not_found",
                details={"credential": name},
            )
        try:
            data = self.vault.open(stored)
        except VaultError as exc:
            raise PermanentError(
                f"credential {name!r} cannot be decrypted: {exc.message}",
                error_type="credential.unreadable",
                details={"credential": name, "key_id": stored.record.key_id},
            ) from None
        resolved = ResolvedCredential.of(
            name, stored.record.type, data, effective_origins(stored.record, data)
        )
        if self.ttl_s > 0:
            self._cache[name] = (now + self.ttl_s, resolved)
        return resolved

    def clear(self) -> None:
        """Forget cached credentials."""
        self._cache.clear()
