"""Credentials, as ciphertext only (see :mod:`flowyard.security.vault`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.credentials import CredentialRecord, CredentialType, StoredCredential


class CredentialStore(Protocol):
    """Encrypted credentials: never a plaintext value."""

    async def create_credential(
        self, record: CredentialRecord, ciphertext: bytes, *, audit: AuditEntry | None = None
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
        audit: AuditEntry | None = None,
    ) -> StoredCredential:
        """Change ``ciphertext``/``key_id``/``description``/``allowed_origins``; version + 1
        (NotFound; Conflict when ``expected_version`` is stale)."""
        ...

    async def delete_credential(self, cred_id: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a credential (NotFound)."""
        ...

    async def reencrypt_credentials(
        self,
        fn: Callable[[StoredCredential], tuple[bytes, str] | None],
        *,
        audit: AuditEntry | None = None,
    ) -> int:
        """Re-encrypt every credential in one transaction with what ``fn`` returns (None:
        keep the row); an exception from ``fn`` changes nothing. Returns the count."""
        ...
