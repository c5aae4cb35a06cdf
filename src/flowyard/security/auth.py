"""Authentication: argon2 passwords, HS256 JWTs with refresh-token rotation, API keys."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from flowyard.domain.auth import (
    ApiKeyRecord,
    AuditEntry,
    RefreshTokenRecord,
    Role,
    UserRecord,
    check_username,
)
from flowyard.domain.errors import InvalidInput, NotFound, Problem
from flowyard.security.passwords import PasswordHashing, check_strength
from flowyard.security.principals import AccessRevoked, AuthError, NewApiKey, Principal, TokenPair
from flowyard.security.throttle import LoginThrottle, ThrottlePolicy
from flowyard.store.ports import AuthStore

API_KEY_PREFIX = "fy_"
ALGORITHM = "HS256"
#: Every token carries these; a token issued before user ids and sessions were in tokens
#: (no ``name``, no ``fam``) is refused: its holder logs in again.
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "fam", "name"]
#: The one answer to a failed login, whatever the reason (no user, wrong password, disabled).
INVALID_LOGIN = "invalid username or password"

_log = logging.getLogger("flowyard.security")


#: How stale an API key's last_used_at may get before it is written again.
LAST_USED_PRECISION = timedelta(minutes=1)
#: The answer to a refresh token that the store no longer accepts, or whose session is past
#: its maximum age (the same words: neither tells more than the other).
REFRESH_REFUSED = "refresh token revoked or expired"


def _new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


def hash_secret(secret: str) -> str:
    """SHA-256 of an API key secret (high-entropy, so a fast hash is right)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class AuthService:
    """Users, tokens and API keys over the store. A change made for a request or a command
    takes its ``audit`` entry, written in the change's transaction."""

    def __init__(
        self,
        store: AuthStore,
        jwt_key: bytes,
        *,
        clock: Callable[[], datetime],
        access_ttl_s: int = 900,
        refresh_ttl_s: int = 14 * 24 * 3600,
        session_max_age_s: int = 30 * 24 * 3600,
        password_min_score: int = 3,
        throttle: ThrottlePolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._key = jwt_key
        self.clock = clock
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        #: A session (a refresh family) ends this long after its login, refreshed or not.
        self.session_max_age_s = session_max_age_s
        #: Ended and expired refresh tokens are pruned at most this often per process...
        self.prune_interval_s = 60.0
        #: ...this many at a time (a full batch prunes again at the next chance).
        self.prune_batch = 1000
        self._monotonic = monotonic
        self._pruned_at: float | None = None
        self.password_min_score = password_min_score
        self.passwords = PasswordHashing()
        self.throttle = LoginThrottle(store, throttle or ThrottlePolicy(), clock=self._now)

    def _now(self) -> datetime:
        return self.clock()  # late-bound: tests move ``clock``

    def check_password(
        self, password: str, username: str = "", *, pointer: str = "/password"
    ) -> None:
        """InvalidInput (422, with zxcvbn's feedback) unless ``password`` is strong enough
        for ``username``."""
        check_strength(
            password, min_score=self.password_min_score, user_inputs=[username], pointer=pointer
        )

    # -- users -----------------------------------------------------------------------------

    async def create_user(
        self, username: str, password: str, role: Role, *, audit: AuditEntry | None = None
    ) -> UserRecord:
        """Create a user with an argon2 password hash (a username against the rule, or a
        weak password, is refused: InvalidInput)."""
        check_username(username)
        self.check_password(password, username)
        pw_hash = await self.passwords.hash(password)
        return await self.store.create_user(
            _new_id("usr"), username, pw_hash, role, self.clock(), audit=audit
        )

    async def update_user(
        self,
        user_id: str,
        *,
        role: Role | None = None,
        disabled: bool | None = None,
        password: str | None = None,
        audit: AuditEntry | None = None,
    ) -> UserRecord:
        """Change a user's role, disabled flag or password (by id). Disabling or a new
        password ends every session of the user: refresh tokens and access tokens."""
        user = await self.store.get_user_by_id(user_id)
        changes: dict[str, Any] = {}
        if role is not None:
            changes["role"] = role
        if disabled is not None:
            changes["disabled"] = disabled
        if password is not None:
            self.check_password(password, user.username)
            changes["password_hash"] = await self.passwords.hash(password)
        return await self.store.update_user(user.id, changes, self.clock(), audit=audit)

    async def list_users(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        role: Role | None = None,
        disabled: bool | None = None,
    ) -> list[UserRecord]:
        """Users by name (all without ``limit``) after a username cursor, optionally of one
        role, disabled or not."""
        return await self.store.list_users(limit=limit, after=after, role=role, disabled=disabled)

    async def get_user_by_name(self, username: str) -> UserRecord:
        """The user called ``username`` (NotFound); never matches an id."""
        return await self.store.get_user_by_name(username)

    async def has_users(self) -> bool:
        """Whether any user exists (the first start creates ``admin`` when none does)."""
        return await self.store.count_users() > 0

    async def delete_user(self, user_id: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a user (by id)."""
        await self.store.delete_user(user_id, now=self.clock(), audit=audit)

    async def ensure_admin(self, password: str | None) -> str | None:
        """First start: with no user at all, create ``admin`` with ``password`` (or a random
        one, returned so it can be shown once). None when users exist. A weak ``password``
        is refused (InvalidInput)."""
        if await self.has_users():
            return None
        chosen = password or secrets.token_urlsafe(18)
        await self.create_user("admin", chosen, Role.ADMIN)
        return None if password else chosen

    async def change_password(
        self,
        user_id: str,
        current: str,
        new: str,
        *,
        client: str,
        audit: AuditEntry | None = None,
    ) -> TokenPair:
        """Self-service: with the current password (throttled like a login), set a new one.
        Every session of the user ends; the answer is a fresh token pair (a new session)."""
        try:
            user = await self.store.get_user_by_id(user_id)
        except NotFound:
            raise AccessRevoked("unknown user") from None
        self.check_password(new, user.username, pointer="/new_password")
        await self.throttle.claim(user.username, client)
        if not await self.passwords.verify(user.password_hash, current):
            raise InvalidInput(
                "the current password is wrong",
                [Problem("/current_password", "does not match", "wrong_password")],
            )
        await self.throttle.succeeded(user.username, client)
        changes = {"password_hash": await self.passwords.hash(new)}
        changed = await self.store.update_user(user.id, changes, self.clock(), audit=audit)
        return await self.issue_tokens(changed)

    # -- tokens ----------------------------------------------------------------------------

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def _decode(self, token: str, typ: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            # The library's words stay in the log: they describe our token format to anyone.
            _log.debug("token refused: %s", exc)
            raise AuthError("invalid token") from None
        if claims.get("typ") != typ:
            raise AuthError("wrong token type")
        return claims

    def _session_end(self, started: datetime) -> datetime:
        return started + timedelta(seconds=self.session_max_age_s)

    @staticmethod
    def _session_start(claims: dict[str, Any]) -> datetime:
        """When the token's session began: its ``auth_time``; a token from before sessions
        had a maximum age has none, and its session counts from the token's issue."""
        started = claims.get("auth_time", claims["iat"])
        if not isinstance(started, int | float):
            raise AuthError("invalid token")
        return datetime.fromtimestamp(started, UTC)

    def _access_token(self, user: UserRecord, family_id: str, started: datetime) -> str:
        """A short-lived access JWT of ``user`` in the session ``family_id`` (begun at
        ``started``); it never outlives the session."""
        now = self.clock()
        return self._encode(
            {
                "sub": user.id,
                "name": user.username,
                "role": user.role.value,
                "typ": "access",
                "jti": uuid.uuid4().hex,
                "fam": family_id,
                "auth_time": int(started.timestamp()),
                "iat": now,
                "exp": min(now + timedelta(seconds=self.access_ttl_s), self._session_end(started)),
            }
        )

    def _refresh_token(
        self, user: UserRecord, started: datetime, family_id: str | None = None
    ) -> tuple[str, RefreshTokenRecord]:
        """A refresh token of the session ``family_id`` (a new one without) begun at
        ``started``: it expires with the session at the latest, in its claims and in the
        store."""
        now = self.clock()
        record = RefreshTokenRecord(
            uuid.uuid4().hex,
            family_id or uuid.uuid4().hex,
            user.id,
            min(now + timedelta(seconds=self.refresh_ttl_s), self._session_end(started)),
            None,
            None,
        )
        token = self._encode(
            {
                "sub": user.id,
                "name": user.username,
                "typ": "refresh",
                "jti": record.id,
                "fam": record.family_id,
                "auth_time": int(started.timestamp()),
                "iat": now,
                "exp": record.expires_at,
            }
        )
        return token, record

    async def issue_tokens(self, user: UserRecord, *, audit: AuditEntry | None = None) -> TokenPair:
        """A new session of ``user``: a refresh token of a new family and an access token of
        it (no password check: callers have done theirs)."""
        # Whole seconds: the session's start travels in the tokens as a JWT timestamp.
        started = self.clock().replace(microsecond=0)
        token, record = self._refresh_token(user, started)
        await self.store.add_refresh_token(record, audit=audit)
        await self._prune_tokens()
        return TokenPair(
            self._access_token(user, record.family_id, started), token, self.access_ttl_s
        )

    async def login(
        self,
        username: str,
        password: str,
        *,
        client: str = "unknown",
        audit: AuditEntry | None = None,
    ) -> TokenPair:
        """Check a password; a new token pair (new refresh family). Throttled per (username,
        ``client``) and per ``client`` (:class:`~flowyard.security.throttle.LoginThrottled`).
        An unknown user, a wrong password and a disabled user are one answer, after the same
        work (a hash is verified either way); ``AuthError.reason`` tells them apart for the
        audit log only."""
        await self.throttle.claim(username, client)
        try:
            user: UserRecord | None = await self.store.get_user_by_name(username)
        except NotFound:
            user = None
        matches = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None:
            raise AuthError(INVALID_LOGIN, reason="unknown_user")
        if not matches:
            raise AuthError(INVALID_LOGIN, reason="wrong_password")
        if user.disabled:
            raise AuthError(INVALID_LOGIN, reason="disabled")
        await self.throttle.succeeded(username, client)
        return await self.issue_tokens(user, audit=audit)

    async def refresh(self, refresh_token: str, *, audit: AuditEntry | None = None) -> TokenPair:
        """Rotate: the old token is used up; reusing a used token revokes its family. A
        session past its maximum age (``session_max_age_s`` after its login) is refused like
        an expired token: its holder logs in again."""
        claims = self._decode(refresh_token, "refresh")
        started = self._session_start(claims)
        if self._session_end(started) <= self.clock():
            raise AuthError(REFRESH_REFUSED)
        user = await self._active_user(str(claims["sub"]))
        family_id = str(claims["fam"])
        token, record = self._refresh_token(user, started, family_id)
        outcome = await self.store.rotate_refresh_token(
            str(claims["jti"]), record, self.clock(), audit=audit
        )
        if outcome == "reused":
            raise AuthError("refresh token reused; its family is revoked")
        if outcome != "ok":
            raise AuthError(REFRESH_REFUSED)
        await self._prune_tokens()
        return TokenPair(self._access_token(user, family_id, started), token, self.access_ttl_s)

    async def _prune_tokens(self) -> None:
        """Now and then (``prune_interval_s``, per process) delete a batch of ended and
        expired refresh tokens: they are of no use, and every login and rotation adds one."""
        now = self._monotonic()
        if self._pruned_at is not None and now - self._pruned_at < self.prune_interval_s:
            return
        self._pruned_at = now
        try:
            pruned = await self.store.prune_refresh_tokens(self.clock(), limit=self.prune_batch)
        except Exception:
            # Bookkeeping: the tokens were issued; a failed prune must not fail the request.
            _log.warning("pruning refresh tokens failed", exc_info=True)
            return
        if pruned >= self.prune_batch:
            self._pruned_at = None  # more are waiting: prune again at the next chance

    async def logout(self, refresh_token: str, *, audit: AuditEntry | None = None) -> None:
        """Revoke the refresh token's family: its refresh and access tokens stop working."""
        claims = self._decode(refresh_token, "refresh")
        await self.store.revoke_refresh_family(str(claims["fam"]), self.clock(), audit=audit)

    async def _active_user(self, user_id: str) -> UserRecord:
        try:
            user = await self.store.get_user_by_id(user_id)
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
        audit: AuditEntry | None = None,
    ) -> NewApiKey:
        """Create a key ``fy_<prefix>_<secret>``; only the hash of the secret is stored. An
        ``expires_at`` must have a time zone and lie in the future (InvalidInput)."""
        if expires_at is not None:
            if expires_at.tzinfo is None or expires_at.utcoffset() is None:
                raise InvalidInput(
                    "expires_at needs a time zone",
                    [Problem("/expires_at", "add a UTC offset, e.g. Z", "naive_datetime")],
                )
            if expires_at <= self.clock():
                raise InvalidInput(
                    "expires_at is in the past",
                    [Problem("/expires_at", "must be in the future", "in_the_past")],
                )
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
        await self.store.create_api_key(record, audit=audit)
        return NewApiKey(record, f"{API_KEY_PREFIX}{prefix}_{secret}")

    async def list_api_keys(
        self,
        *,
        limit: int | None = None,
        before: tuple[datetime, str] | None = None,
        role: Role | None = None,
        revoked: bool | None = None,
    ) -> list[ApiKeyRecord]:
        """API keys' records newest first (all without ``limit``) after a ``(created_at,
        id)`` cursor, optionally of one role, revoked or not."""
        return await self.store.list_api_keys(
            limit=limit, before=before, role=role, revoked=revoked
        )

    async def revoke_api_key(self, key_id: str, *, audit: AuditEntry | None = None) -> ApiKeyRecord:
        """Revoke a key now (NotFound); revoking twice keeps the first time."""
        return await self.store.revoke_api_key(key_id, self.clock(), audit=audit)

    async def _api_key_principal(self, token: str) -> Principal:
        prefix, _, secret = token[len(API_KEY_PREFIX) :].partition("_")
        found = await self.store.find_api_key_and_owner(prefix) if prefix and secret else None
        if found is None or not hmac.compare_digest(found[0].hash, hash_secret(secret)):
            raise AuthError("invalid API key")
        record, owner = found
        now = self.clock()
        # A key acts for its user: while the user is disabled the key is as good as revoked
        # (the same answer: whoever holds the key learns nothing about the user).
        if record.revoked_at is not None or (owner is not None and owner.disabled):
            raise AccessRevoked("API key revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthError("API key expired")
        # last_used_at to the minute: a write per request would tax every machine client.
        if record.last_used_at is None or now - record.last_used_at >= LAST_USED_PRECISION:
            await self.store.touch_api_key(record.id, now)
        # Never more than the user may do now: a demoted user's keys are demoted with it.
        role = record.role if owner is None or owner.role.allows(record.role) else owner.role
        return Principal("key", record.prefix, role, record.user_id)

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of an access JWT or an API key; AuthError otherwise."""
        if not token:
            raise AuthError("missing credentials")
        if token.startswith(API_KEY_PREFIX):
            return await self._api_key_principal(token)
        claims = self._decode(token, "access")
        try:
            user, live = await self.store.session_user(str(claims["sub"]), str(claims["fam"]))
        except NotFound:
            raise AccessRevoked("unknown user") from None
        if user.disabled:
            raise AccessRevoked("user is disabled")
        if not live:
            raise AccessRevoked("session ended (logged out, or the password changed)")
        return Principal("user", user.username, user.role, user.id)
