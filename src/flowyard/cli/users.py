"""``flowyard users ...`` and ``flowyard api-keys ...``: manage credentials directly in the
database (like ``runs``). Changes are audited as ``cli:<os user>``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table

from flowyard.bootstrap import Container
from flowyard.cli.common import DbOption, cli_actor, err, fail, out, with_container
from flowyard.domain.auth import (
    USERNAME_RULE,
    ApiKeyRecord,
    AuditEntry,
    Role,
    UserRecord,
    check_username,
)
from flowyard.domain.clock import utc_now
from flowyard.domain.errors import InvalidInput
from flowyard.security import NewApiKey

T = TypeVar("T")

users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


def _audited(
    db: str | None, action: str, target_type: str, target_id: str | None,
    fn: Callable[[Container, AuditEntry], Awaitable[T]],
) -> T:  # fmt: skip
    """Run ``fn`` with the command's audit entry, which it passes to the change (``audit=``):
    the entry is written with it."""

    async def main(container: Container) -> T:
        entry = AuditEntry(action, cli_actor(), target_type, target_id, source_ip="cli")
        return await fn(container, entry)

    return with_container(db, main)


def _new_username(username: str) -> str:
    """Refuse a name against the username rule (the API's) before the password is asked."""
    try:
        check_username(username)
    except InvalidInput as exc:
        fail(exc.message, code=2)
    return username


@users_app.command("create")
def users_create(
    username: Annotated[
        str, typer.Argument(help=f"User name: {USERNAME_RULE}", callback=_new_username)
    ],
    role: Annotated[Role, typer.Option(help="Role")] = Role.VIEWER,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Password")
    ] = "",
    db: DbOption = None,
) -> None:
    """Create a user."""

    async def fn(container: Container, audit: AuditEntry) -> UserRecord:
        return await container.auth.create_user(username, password, role, audit=audit)

    user = _audited(db, "user.create", "user", None, fn)
    out.print(f"created user {user.username} ({user.role.value}) {user.id}")


@users_app.command("list")
def users_list(db: DbOption = None) -> None:
    """List users."""

    async def fn(container: Container) -> list[UserRecord]:
        return await container.auth.list_users()

    table = Table("id", "username", "role", "disabled", "created")
    for u in with_container(db, fn):
        table.add_row(u.id, u.username, u.role.value, str(u.disabled), u.created_at.isoformat())
    out.print(table)


async def _by_name(container: Container, username: str, audit: AuditEntry) -> UserRecord:
    """The user named ``username`` (the CLI names users; the API takes ids). The audit entry
    names the user by id."""
    user = await container.auth.get_user_by_name(username)
    audit.target_type, audit.target_id = "user", user.id
    return user


@users_app.command("set-role")
def users_set_role(
    username: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[Role, typer.Argument(help="New role")],
    db: DbOption = None,
) -> None:
    """Change a user's role."""

    async def fn(container: Container, audit: AuditEntry) -> UserRecord:
        user = await _by_name(container, username, audit)
        return await container.auth.update_user(user.id, role=role, audit=audit)

    user = _audited(db, "user.update", "user", None, fn)
    out.print(f"{user.username} is now {user.role.value}")


@users_app.command("set-password")
def users_set_password(
    username: Annotated[str, typer.Argument(help="User name")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Password")
    ] = "",
    db: DbOption = None,
) -> None:
    """Set a user's password (a weak one is refused); the user's sessions end."""

    async def fn(container: Container, audit: AuditEntry) -> UserRecord:
        user = await _by_name(container, username, audit)
        return await container.auth.update_user(user.id, password=password, audit=audit)

    user = _audited(db, "user.update", "user", None, fn)
    out.print(f"password of {user.username} changed; its sessions have ended")


@users_app.command("delete")
def users_delete(
    username: Annotated[str, typer.Argument(help="User name")], db: DbOption = None
) -> None:
    """Delete a user."""

    async def fn(container: Container, audit: AuditEntry) -> None:
        user = await _by_name(container, username, audit)
        await container.auth.delete_user(user.id, audit=audit)

    _audited(db, "user.delete", "user", None, fn)
    out.print(f"deleted user {username}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="What the key is for")],
    role: Annotated[Role, typer.Option(help="Role")] = Role.VIEWER,
    expires_days: Annotated[
        int | None, typer.Option(min=1, help="Expire after this many days")
    ] = None,
    db: DbOption = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    expires = utc_now() + timedelta(days=expires_days) if expires_days else None

    async def fn(container: Container, audit: AuditEntry) -> NewApiKey:
        return await container.auth.create_api_key(name, role, expires_at=expires, audit=audit)

    created = _audited(db, "api_key.create", "api_key", None, fn)
    err.print(f"API key {created.record.id} ({role.value}); shown once, store it now:")
    out.print(created.key, highlight=False, markup=False)


@keys_app.command("list")
def keys_list(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """List API keys (metadata only), with whole ids (what ``revoke`` takes)."""

    async def fn(container: Container) -> list[ApiKeyRecord]:
        return await container.auth.list_api_keys()

    keys = with_container(db, fn)

    def when(t: datetime | None) -> str | None:
        return t.isoformat() if t else None

    if as_json:
        out.print_json(
            data=[
                {
                    "id": k.id,
                    "prefix": k.prefix,
                    "name": k.name,
                    "role": k.role.value,
                    "expires_at": when(k.expires_at),
                    "last_used_at": when(k.last_used_at),
                    "revoked_at": when(k.revoked_at),
                }
                for k in keys
            ]
        )
        return
    # Ids are what users copy into ``revoke``: never truncate or wrap them.
    table = Table(
        Column("id", no_wrap=True, min_width=len(keys[0].id) if keys else 2),
        "prefix", "name", "role", "expires", "last used", "revoked",
    )  # fmt: skip
    for k in keys:
        table.add_row(
            k.id, k.prefix, k.name, k.role.value,
            *(when(t) or "-" for t in (k.expires_at, k.last_used_at, k.revoked_at)),
        )  # fmt: skip
    # Piped output has no width to fit: do not squeeze the table into 80 columns.
    (out if out.is_terminal else Console(width=200)).print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id")], db: DbOption = None) -> None:
    """Revoke an API key."""

    async def fn(container: Container, audit: AuditEntry) -> ApiKeyRecord:
        return await container.auth.revoke_api_key(key_id, audit=audit)

    _audited(db, "api_key.revoke", "api_key", key_id, fn)
    out.print(f"revoked {key_id}")
