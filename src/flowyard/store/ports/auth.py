"""Security persistence: users, API keys, refresh tokens and failed-login counters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from flowyard.domain.auth import (
    ApiKeyRecord,
    AuditEntry,
    LoginFailures,
    RefreshTokenRecord,
    Role,
    UserRecord,
)


class LoginStore(Protocol):
    """Failed-login counters of the login throttle (never audited)."""

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


class AuthStore(LoginStore, Protocol):
    """Users, API keys and refresh-token families (and the login counters)."""

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

    async def update_user(
        self,
        user_id: str,
        changes: dict[str, Any],
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> UserRecord:
        """Change ``role``, ``disabled`` or ``password_hash`` (NotFound); disabling or a new
        password revokes the user's refresh tokens. Demoting or disabling the last enabled
        admin is a Conflict, checked in the same transaction."""
        ...

    async def delete_user(
        self, user_id: str, *, now: datetime, audit: AuditEntry | None = None
    ) -> None:
        """Delete a user and revoke its API keys at ``now`` (NotFound; Conflict for the last
        enabled admin)."""
        ...

    async def create_api_key(
        self, key: ApiKeyRecord, *, audit: AuditEntry | None = None
    ) -> ApiKeyRecord:
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

    async def revoke_api_key(
        self, key_id: str, now: datetime, *, audit: AuditEntry | None = None
    ) -> ApiKeyRecord:
        """Revoke a key (NotFound)."""
        ...

    async def touch_api_key(self, key_id: str, now: datetime) -> None:
        """Set a key's last-used time."""
        ...

    async def add_refresh_token(
        self, token: RefreshTokenRecord, *, audit: AuditEntry | None = None
    ) -> None:
        """Insert a refresh token."""
        ...

    async def rotate_refresh_token(
        self,
        jti: str,
        new: RefreshTokenRecord,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> str:
        """Use ``jti`` and add ``new`` to its family: ``ok``, ``reused`` (family revoked) or
        ``invalid``."""
        ...

    async def revoke_refresh_family(
        self, family_id: str, now: datetime, *, audit: AuditEntry | None = None
    ) -> None:
        """Revoke a refresh-token family."""
        ...

    async def prune_refresh_tokens(self, now: datetime, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` revoked or expired refresh tokens; how many."""
        ...
