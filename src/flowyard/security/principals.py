"""Who is asking and what authenticating gives: principals, token pairs, new API keys, and
the errors that refuse credentials."""

from __future__ import annotations

from dataclasses import dataclass

from flowyard.domain.auth import ApiKeyRecord, Role


class AuthError(Exception):
    """Credentials are missing, invalid, expired or revoked (HTTP 401). ``reason`` says why
    for the audit log when the message must not (a failed login)."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


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
