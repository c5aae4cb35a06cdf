"""Security records: roles, users, API keys, refresh tokens and audit entries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from flowyard.domain.errors import InvalidInput, Problem

#: The one rule for usernames, wherever a user is made (API, CLI, first start): 1 to
#: ``USERNAME_MAX_LENGTH`` of these characters. They read safely in logs, audit actors
#: (``user:<name>``), URLs and shells; an email address fits.
USERNAME_MAX_LENGTH = 128
USERNAME_CHARACTERS = "A-Za-z0-9_.@-"
#: The rule as a JSON Schema / pydantic pattern (anchored; Rust regex: ``$`` is the end).
USERNAME_PATTERN = f"^[{USERNAME_CHARACTERS}]+$"
_USERNAME = re.compile(f"[{USERNAME_CHARACTERS}]+")
USERNAME_RULE = f"1 to {USERNAME_MAX_LENGTH} characters: letters, digits and _ . @ - (no spaces)"


def check_username(username: str) -> None:
    """InvalidInput (pointer ``/username``) unless ``username`` follows the username rule."""
    if not username:
        why = "it is empty"
    elif len(username) > USERNAME_MAX_LENGTH:
        why = f"it has {len(username)} characters, at most {USERNAME_MAX_LENGTH} are allowed"
    elif _USERNAME.fullmatch(username) is None:
        why = "only letters, digits and _ . @ - are allowed (no spaces)"
    else:
        return
    raise InvalidInput(
        f"invalid username {username[:40]!r}: {why}",
        [Problem("/username", f"{why}; {USERNAME_RULE}", "invalid_username")],
    )


class Role(StrEnum):
    """Roles, from most to least powerful: admin > editor > operator > viewer."""

    ADMIN = "admin"
    EDITOR = "editor"
    OPERATOR = "operator"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        """Higher is more powerful."""
        return {"admin": 4, "editor": 3, "operator": 2, "viewer": 1}[self.value]

    def allows(self, required: Role) -> bool:
        """True when this role includes ``required``."""
        return self.rank >= required.rank


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A person who logs in with a password (its argon2 hash never leaves the store layer
    except to be verified)."""

    id: str
    username: str
    password_hash: str
    role: Role
    disabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A machine credential; only the SHA-256 of its secret is stored."""

    id: str
    prefix: str
    hash: str
    name: str
    role: Role
    user_id: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """One refresh token of a rotation family."""

    id: str
    family_id: str
    user_id: str
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class LoginFailures:
    """Failed (or still unresolved) login attempts counted against one throttle key: a
    username from a client address, or a client address. ``last_at`` is the last attempt
    let through; the throttle's wait is measured from it."""

    key: str
    failures: int
    first_at: datetime
    last_at: datetime


@dataclass(slots=True)
class AuditEntry:
    """An audit entry being built for one state-changing request or command."""

    action: str
    actor: str = "anonymous"
    target_type: str | None = None
    target_id: str | None = None
    source_ip: str | None = None
    outcome: str = "success"
    detail: dict[str, Any] | None = None
    #: Set once the entry is in the database (with the change it describes).
    written: bool = False


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A stored audit entry."""

    id: int
    at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    source_ip: str | None
    outcome: str
    detail: dict[str, Any] | None = field(default=None)
