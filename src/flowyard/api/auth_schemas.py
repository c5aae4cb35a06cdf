"""The request and response models of the security resources (tokens, users, API keys,
audit), with their examples."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from flowyard.api.schemas import AT, LATER
from flowyard.domain.auth import (
    USERNAME_MAX_LENGTH,
    USERNAME_PATTERN,
    USERNAME_RULE,
    ApiKeyRecord,
    AuditRecord,
    Role,
    UserRecord,
)
from flowyard.security import TokenPair

#: The domain's username rule (``check_username``), as a schema: the CLI applies the same.
Username = Annotated[
    str,
    Field(
        min_length=1,
        max_length=USERNAME_MAX_LENGTH,
        pattern=USERNAME_PATTERN,
        description=USERNAME_RULE[0].upper() + USERNAME_RULE[1:] + ".",
    ),
]
USER_ID = "usr_4f1c2a9d8e7b4c3a9f0e1d2c3b4a5968"
KEY_ID = "key_8a7b6c5d4e3f4a1b9c8d7e6f5a4b3c2d"
ACCESS_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln"
REFRESH_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOiJyZWZyZXNoIn0.c2ln"


class TokenResponse(BaseModel):
    """An OAuth2 bearer token pair."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": ACCESS_TOKEN,
                    "refresh_token": REFRESH_TOKEN,
                    "token_type": "bearer",
                    "expires_in": 900,
                }
            ]
        }
    )

    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> TokenResponse:
        """From the service's pair."""
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_in=pair.expires_in,
        )


PASSWORD_RULE = (
    "At least 8 characters and a zxcvbn strength of at least `password_min_score` (3 of 4 by "
    "default), the username counting as a known word; a weak one is refused (422) with "
    "zxcvbn's feedback."
)


class PasswordChange(BaseModel):
    """The caller's current password and the new one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "current_password": "correct horse battery staple",
                    "new_password": "a quiet lighthouse keeps nine ledgers",
                }
            ]
        },
    )
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024, description=PASSWORD_RULE)


class RefreshRequest(BaseModel):
    """A refresh token to rotate or revoke."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"refresh_token": REFRESH_TOKEN}]},
    )
    refresh_token: str = Field(min_length=1, max_length=4096)


class UserCreate(BaseModel):
    """A new user."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"username": "ada", "password": "correct horse battery staple", "role": "editor"}
            ]
        },
    )
    username: Username
    password: str = Field(min_length=8, max_length=1024, description=PASSWORD_RULE)
    role: Role = Role.VIEWER


class UserUpdate(BaseModel):
    """Changes to a user. Demoting, disabling or deleting the last enabled admin is refused
    (409)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"role": "operator"},
                {"disabled": True},
                {"password": "a new long passphrase"},
            ]
        },
    )
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=1024, description=PASSWORD_RULE)


class UserPublic(BaseModel):
    """A user (never its password hash)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": USER_ID,
                    "username": "ada",
                    "role": "editor",
                    "disabled": False,
                    "created_at": AT,
                    "updated_at": LATER,
                }
            ]
        }
    )

    id: str
    username: str
    role: Role
    disabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, u: UserRecord) -> UserPublic:
        """From a record."""
        return cls(
            id=u.id,
            username=u.username,
            role=u.role,
            disabled=u.disabled,
            created_at=u.created_at,
            updated_at=u.updated_at,
        )


class ApiKeyCreate(BaseModel):
    """A new API key."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "ci-deploy", "role": "editor", "expires_at": "2026-01-15T00:00:00Z"}
            ]
        },
    )
    name: str = Field(min_length=1, max_length=200)
    role: Role = Role.VIEWER
    expires_at: AwareDatetime | None = Field(
        None, description="When the key stops working: in the future, with a time zone."
    )


API_KEY_EXAMPLE: dict[str, Any] = {
    "id": KEY_ID,
    "prefix": "3f9a0c1d2e4b",
    "name": "ci-deploy",
    "role": "editor",
    "user_id": USER_ID,
    "expires_at": "2026-01-15T00:00:00Z",
    "last_used_at": None,
    "revoked_at": None,
    "created_at": AT,
}


class ApiKeyPublic(BaseModel):
    """An API key's metadata (never its secret or hash)."""

    model_config = ConfigDict(json_schema_extra={"examples": [API_KEY_EXAMPLE]})

    id: str
    prefix: str
    name: str
    role: Role
    user_id: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, k: ApiKeyRecord) -> ApiKeyPublic:
        """From a record."""
        return cls(
            id=k.id,
            prefix=k.prefix,
            name=k.name,
            role=k.role,
            user_id=k.user_id,
            expires_at=k.expires_at,
            last_used_at=k.last_used_at,
            revoked_at=k.revoked_at,
            created_at=k.created_at,
        )


class ApiKeyCreated(ApiKeyPublic):
    """A created key: ``key`` is shown this once and cannot be read again."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **API_KEY_EXAMPLE,
                    "key": "fy_3f9a0c1d2e4b_Zr8n0cW3yQmV7tKx1pLs9dHf2uJ6aB4eGi5oN0qRw8E",
                }
            ]
        }
    )

    key: str


class AuditPublic(BaseModel):
    """One audit entry."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 981,
                    "at": AT,
                    "actor": "user:admin",
                    "action": "workflow.update",
                    "target_type": "workflow",
                    "target_id": "wf_01jh5k2v3m4n5p6q7r8s9t0vwx",
                    "source_ip": "10.0.4.17",
                    "outcome": "success",
                    "detail": None,
                }
            ]
        }
    )

    id: int
    at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    source_ip: str | None
    outcome: str
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, a: AuditRecord) -> AuditPublic:
        """From a record."""
        return cls(
            id=a.id,
            at=a.at,
            actor=a.actor,
            action=a.action,
            target_type=a.target_type,
            target_id=a.target_id,
            source_ip=a.source_ip,
            outcome=a.outcome,
            detail=a.detail,
        )
