"""Authentication: argon2 passwords, HS256 JWTs with refresh-token rotation, API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from flowyard.domain.auth import ApiKeyRecord, RefreshTokenRecord, Role, UserRecord
from flowyard.domain.errors import InvalidInput, NotFound, Problem
from flowyard.store.ports import Store

API_KEY_PREFIX = "fy_"
ALGORITHM = "HS256"
MIN_PASSWORD = 8


#: How stale an API key's last_used_at may get before it is written again.
LAST_USED_PRECISION = timedelta(minutes=1)


class AuthError(Exception):
    """Credentials are missing, invalid, expired or revoked (HTTP 401)."""


class AccessRevoked(AuthError):
    """Credentials that were genuine are no longer accepted: the user was disabled or
    deleted, or the API key revoked. Still 401 over HTTP; a WebSocket closes with 1008."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user (by JWT) or an API key."""

    kind: str
    name: str
    role: Role
    user_id: str | None = None

    @property
    def actor(self) -> str:
        """``user:<name>`` or ``key:<prefix>``, as recorded in events and the audit log."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What ``POST /auth/token`` and ``/auth/refresh`` return."""

    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A created key: its record and the full key, shown once."""

    record: ApiKeyRecord
    key: str


def _new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


def hash_secret(secret: str) -> str:
    """SHA-256 of an API key secret (high-entropy, so a fast hash is right)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_password(password: str) -> None:
    """Refuse passwords shorter than ``MIN_PASSWORD``."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(
            "password too short",
            [Problem("/password", f"at least {MIN_PASSWORD} characters", "too_short")],
        )


class AuthService:
    """Users, tokens and API keys over the store."""

    def __init__(
        self,
        store: Store,
        jwt_key: bytes,
        *,
        clock: Callable[[], datetime],
        access_ttl_s: int = 900,
        refresh_ttl_s: int = 14 * 24 * 3600,
    ) -> None:
        self.store = store
        self._key = jwt_key
        self.clock = clock
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self._hasher = PasswordHasher()

    # -- users -----------------------------------------------------------------------------

    async def create_user(self, username: str, password: str, role: Role) -> UserRecord:
        """Create a user with an argon2 password hash."""
        check_password(password)
        pw_hash = self._hasher.hash(password)
        return await self.store.create_user(_new_id("usr"), username, pw_hash, role, self.clock())

    async def update_user(
        self,
        ref: str,
        *,
        role: Role | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> UserRecord:
        """Change a user's role, disabled flag or password."""
        user = await self.store.get_user(ref)
        changes: dict[str, Any] = {}
        if role is not None:
            changes["role"] = role
        if disabled is not None:
            changes["disabled"] = disabled
        if password is not None:
            check_password(password)
            changes["password_hash"] = self._hasher.hash(password)
        return await self.store.update_user(user.id, changes, self.clock())

    async def delete_user(self, ref: str) -> None:
        """Delete a user."""
        user = await self.store.get_user(ref)
        await self.store.delete_user(user.id)

    async def ensure_admin(self, password: str | None) -> str | None:
        """First start: with no user at all, create ``admin`` with ``password`` (or a random
        one, returned so it can be shown once). None when users exist."""
        if await self.store.count_users() > 0:
            return None
        chosen = password or secrets.token_urlsafe(18)
        await self.create_user("admin", chosen, Role.ADMIN)
        return None if password else chosen

    # -- tokens ----------------------------------------------------------------------------

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def _decode(self, token: str, typ: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        if claims.get("typ") != typ:
            raise AuthError("wrong token type")
        return claims

    def access_token(self, user: UserRecord) -> str:
        """A short-lived access JWT for ``user``."""
        now = self.clock()
        return self._encode(
            {
                "sub": user.username,
                "uid": user.id,
                "role": user.role.value,
                "typ": "access",
                "jti": uuid.uuid4().hex,
                "iat": now,
                "exp": now + timedelta(seconds=self.access_ttl_s),
            }
        )

    def _refresh_token(self, user: UserRecord) -> tuple[str, RefreshTokenRecord]:
        now = self.clock()
        record = RefreshTokenRecord(
            uuid.uuid4().hex,
            uuid.uuid4().hex,
            user.id,
            now + timedelta(seconds=self.refresh_ttl_s),
            None,
            None,
        )
        token = self._encode(
            {
                "sub": user.username,
                "typ": "refresh",
                "jti": record.id,
                "fam": record.family_id,
                "iat": now,
                "exp": record.expires_at,
            }
        )
        return token, record

    async def login(self, username: str, password: str) -> TokenPair:
        """Check a password; a new token pair (new refresh family)."""
        try:
            user = await self.store.get_user(username)
        except NotFound:
            self._hasher.hash(password)  # same work either way: no user enumeration by timing
            raise AuthError("invalid username or password") from None
        try:
            self._hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            raise AuthError("invalid username or password") from None
        if user.disabled:
            raise AccessRevoked("user is disabled")
        token, record = self._refresh_token(user)
        await self.store.add_refresh_token(record)
        return TokenPair(self.access_token(user), token, self.access_ttl_s)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the old token is used up; reusing a used token revokes its family."""
        claims = self._decode(refresh_token, "refresh")
        user = await self._active_user(str(claims["sub"]))
        token, record = self._refresh_token(user)
        outcome = await self.store.rotate_refresh_token(str(claims["jti"]), record, self.clock())
        if outcome == "reused":
            raise AuthError("refresh token reused; its family is revoked")
        if outcome != "ok":
            raise AuthError("refresh token revoked or expired")
        return TokenPair(self.access_token(user), token, self.access_ttl_s)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the refresh token's family."""
        claims = self._decode(refresh_token, "refresh")
        await self.store.revoke_refresh_family(str(claims["fam"]), self.clock())

    async def _active_user(self, username: str) -> UserRecord:
        try:
            user = await self.store.get_user(username)
        except NotFound:
            raise AccessRevoked("unknown user") from None
        if user.disabled:
            raise AccessRevoked("user is disabled")
        return user

    # -- API keys --------------------------------------------------------------------------

    async def create_api_key(
        self,
        name: str,
        role: Role,
        *,
        user_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> NewApiKey:
        """Create a key ``fy_<prefix>_<secret>``; only the hash of the secret is stored."""
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            _new_id("key"),
            prefix,
            hash_secret(secret),
            name,
            role,
            user_id,
            expires_at,
            None,
            None,
            self.clock(),
        )
        await self.store.create_api_key(record)
        return NewApiKey(record, f"{API_KEY_PREFIX}{prefix}_{secret}")

    async def _api_key_principal(self, token: str) -> Principal:
        prefix, _, secret = token[len(API_KEY_PREFIX) :].partition("_")
        record = await self.store.find_api_key(prefix) if prefix and secret else None
        if record is None or not hmac.compare_digest(record.hash, hash_secret(secret)):
            raise AuthError("invalid API key")
        now = self.clock()
        if record.revoked_at is not None:
            raise AccessRevoked("API key revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthError("API key expired")
        # last_used_at to the minute: a write per request would tax every machine client.
        if record.last_used_at is None or now - record.last_used_at >= LAST_USED_PRECISION:
            await self.store.touch_api_key(record.id, now)
        return Principal("key", record.prefix, record.role, record.user_id)

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of an access JWT or an API key; AuthError otherwise."""
        if not token:
            raise AuthError("missing credentials")
        if token.startswith(API_KEY_PREFIX):
            return await self._api_key_principal(token)
        claims = self._decode(token, "access")
        user = await self._active_user(str(claims["sub"]))
        return Principal("user", user.username, user.role, user.id)
