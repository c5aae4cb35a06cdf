"""``flowyard credentials ...``: the vault from the command line (directly on the database,
audited as ``cli:<os user>``), and the master-key rotation."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowyard.bootstrap import Container
from flowyard.cli.common import (
    DbOption,
    cli_actor,
    err,
    fail,
    out,
    read_json,
    settings_for,
    with_container,
)
from flowyard.cli.quotas import credential_quota_app
from flowyard.domain.auth import AuditEntry
from flowyard.domain.credentials import CredentialType
from flowyard.security import CredentialView, Rotation
from flowyard.security.keys import (
    MIN_KEY_BYTES,
    key_file_path,
    load_master_key,
    parse_key,
    read_key_file,
    write_key_file,
)
from flowyard.security.vault import sidecar_paths

credentials_app = typer.Typer(
    help="Manage credentials (encrypted; secrets are never printed).", no_args_is_help=True
)

credentials_app.add_typer(credential_quota_app, name="quota")

NEW_KEY_ENV = "FLOWYARD_NEW_SECRET_KEY"


OriginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-origin",
        help="An origin (scheme://host[:port]; '*.' for subdomains) the credential may be sent "
        "to; repeat for several. Required for bearer, basic, api_key_header and custom.",
    ),
]


def _row(view: CredentialView) -> list[str]:
    r = view.record
    origins = " ".join(view.allowed_origins) or "(none: refused)"
    return [r.name, r.type.value, origins, r.description or "", r.key_id, str(r.version), r.id]


@credentials_app.command("list")
def credentials_list(
    type_: Annotated[CredentialType | None, typer.Option("--type", help="Only this type")] = None,
    db: DbOption = None,
) -> None:
    """List credentials (metadata only)."""

    async def fn(container: Container) -> list[CredentialView]:
        views: list[CredentialView] = []
        after: str | None = None
        while True:
            page = await container.credentials.list(limit=500, after=after, type_=type_)
            views.extend(page)
            if len(page) < 500:
                return views
            after = page[-1].record.name

    table = Table("name", "type", "allowed origins", "description", "key id", "version", "id")
    # Listed even when the master key is lost, so an operator can see what to give up.
    for view in with_container(db, fn, check_keys=False):
        table.add_row(*(escape(cell) for cell in _row(view)))
    # Piped output is not cut at 80 columns (origins and ids would be).
    (out if out.is_terminal else Console(width=240)).print(table)


@credentials_app.command("show")
def credentials_show(
    name: Annotated[str, typer.Argument(help="Credential name")], db: DbOption = None
) -> None:
    """Print a credential's metadata and masked data as JSON."""

    async def fn(container: Container) -> CredentialView:
        return await container.credentials.get(name)

    view = with_container(db, fn, check_keys=False)
    r = view.record
    shown = {
        "id": r.id,
        "name": r.name,
        "type": r.type.value,
        "description": r.description,
        "data": view.data,
        "problem": view.problem,
        "allowed_origins": list(view.allowed_origins),
        "key_id": r.key_id,
        "version": r.version,
        "created_by": r.created_by,
        "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(),
    }
    out.print_json(json.dumps(shown))


@credentials_app.command("create")
def credentials_create(
    name: Annotated[str, typer.Argument(help="Credential name (referenced by node configs)")],
    type_: Annotated[CredentialType, typer.Option("--type", help="Credential type")],
    data_file: Annotated[
        Path, typer.Option("--data-file", help="JSON object of the type's fields ('-': stdin)")
    ],
    description: Annotated[str | None, typer.Option(help="What it is for")] = None,
    allowed_origin: OriginOption = None,
    db: DbOption = None,
) -> None:
    """Create a credential from a JSON file or stdin (kept off the command line, so the
    secret stays out of shell history and process lists)."""
    data = read_json(data_file)

    async def fn(container: Container) -> CredentialView:
        entry = AuditEntry("credential.create", cli_actor(), "credential", None, source_ip="cli")
        return await container.credentials.create(
            name,
            type_,
            data,
            description=description,
            actor=cli_actor(),
            allowed_origins=allowed_origin or None,
            audit=entry,
        )

    view = with_container(db, fn)
    out.print(f"created credential {view.record.name} ({view.record.type.value}) {view.record.id}")
    out.print(f"allowed origins: {' '.join(view.allowed_origins)}")


@credentials_app.command("set-origins")
def credentials_set_origins(
    name: Annotated[str, typer.Argument(help="Credential name")],
    allowed_origin: OriginOption = None,
    default: Annotated[
        bool,
        typer.Option("--default", help="Provider types: back to the provider's own endpoints."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Replace the origins a credential may be sent to (e.g. for a credential made before
    origins existed, which is refused until they are set)."""
    if default == bool(allowed_origin):
        fail("give --allowed-origin (one or more) or --default")
    origins = None if default else list(allowed_origin or [])

    async def fn(container: Container) -> CredentialView:
        entry = AuditEntry("credential.update", cli_actor(), "credential", name, source_ip="cli")
        return await container.credentials.update(name, allowed_origins=origins, audit=entry)

    view = with_container(db, fn)
    out.print(f"credential {view.record.name}: allowed origins {' '.join(view.allowed_origins)}")


@credentials_app.command("delete")
def credentials_delete(
    name: Annotated[str, typer.Argument(help="Credential name")], db: DbOption = None
) -> None:
    """Delete a credential."""

    async def fn(container: Container) -> None:
        entry = AuditEntry("credential.delete", cli_actor(), "credential", name, source_ip="cli")
        await container.credentials.delete(name, audit=entry)

    # Allowed when the master key is lost: the way to give up what it encrypted.
    with_container(db, fn, check_keys=False)
    out.print(f"deleted credential {name}")


def _copy_key_file(source: Path, target: Path) -> None:
    """``target`` = a 0600 copy of ``source``, replaced atomically."""
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f, source.open("rb") as src:
        shutil.copyfileobj(src, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rotate_key_file(db: str | None, key_file: Path) -> Rotation:
    """Key-file mode: every step leaves the key file in place and every row readable."""
    old, new = sidecar_paths(key_file)
    if not key_file.exists():
        fail(f"key file {key_file} does not exist; nothing to rotate")
    # 1. The new key, beside the current one. A ``.new`` left by an interrupted rotation is
    #    reused: rows may already be encrypted under it.
    if new.exists():
        err.print(f"resuming an interrupted rotation with {new}")
    else:
        write_key_file(new, secrets.token_bytes(MIN_KEY_BYTES))
        _fsync_dir(key_file.parent)

    # 2. Re-encrypt every credential under it, in one transaction. The container's keyring
    #    already holds the current key, ``.old`` and ``.new``.
    async def fn(container: Container) -> Rotation:
        entry = AuditEntry("credential.rotate_key", cli_actor(), source_ip="cli")
        return await container.credentials.rotate_master_key(read_key_file(new), audit=entry)

    rotation = with_container(db, fn)
    # 3. Keep the former key as ``.old`` (rows written meanwhile by processes still on it
    #    stay readable), then 4. move the new key in place (atomic rename).
    _copy_key_file(key_file, old)
    os.replace(new, key_file)
    _fsync_dir(key_file.parent)
    err.print(
        f"{key_file} now holds the new master key; the former one is in {old}. Restart every "
        "API process and worker of this deployment (tokens signed with the former key stop "
        f"working: users log in again). Delete {old} once all of them run on the new key."
    )
    return rotation


def _rotate_env(db: str | None) -> Rotation:
    """``FLOWYARD_SECRET_KEY`` mode: the new key comes from ``FLOWYARD_NEW_SECRET_KEY``."""
    raw = os.environ.get(NEW_KEY_ENV)
    if not raw:
        fail(
            f"FLOWYARD_SECRET_KEY is set: give the new master key in {NEW_KEY_ENV} "
            "(e.g. the output of: openssl rand -hex 32)"
        )
    new_master = parse_key(raw, NEW_KEY_ENV)

    async def fn(container: Container) -> Rotation:
        entry = AuditEntry("credential.rotate_key", cli_actor(), source_ip="cli")
        return await container.credentials.rotate_master_key(new_master, audit=entry)

    rotation = with_container(db, fn)
    err.print(
        "Now, for every API process and worker of this deployment: set FLOWYARD_SECRET_KEY to "
        f"the value of {NEW_KEY_ENV}, and FLOWYARD_PREVIOUS_SECRET_KEYS to the former "
        "FLOWYARD_SECRET_KEY until all of them have restarted (then remove it). Tokens signed "
        "with the former key stop working: users log in again."
    )
    return rotation


@credentials_app.command("reencrypt")
def credentials_reencrypt(db: DbOption = None) -> None:
    """Re-encrypt every credential not under the current master key (one transaction): the
    last step of a rotation, for rows written meanwhile by processes on the former key."""
    settings = settings_for(db)

    async def fn(container: Container) -> Rotation:
        entry = AuditEntry("credential.reencrypt", cli_actor(), source_ip="cli")
        return await container.credentials.rotate_master_key(load_master_key(settings), audit=entry)

    rotation = with_container(db, fn)
    out.print(f"re-encrypted {rotation.reencrypted} credential(s); vault key id {rotation.key_id}")


@credentials_app.command("rotate-key")
def credentials_rotate_key(db: DbOption = None) -> None:
    """Rotate the master key and re-encrypt every credential under it (one transaction).

    Key-file mode: a new key is written to <keyfile>.new, the credentials are re-encrypted,
    the former key is kept as <keyfile>.old and the new one takes the key file's place.
    FLOWYARD_SECRET_KEY mode: the new key is read from FLOWYARD_NEW_SECRET_KEY."""
    settings = settings_for(db)
    if settings.secret_key is not None:
        rotation = _rotate_env(db)
    else:
        key_file = key_file_path(settings)
        if key_file is None:
            fail("this database has an ephemeral key (in-memory); nothing to rotate")
        rotation = _rotate_key_file(db, key_file)
    out.print(f"re-encrypted {rotation.reencrypted} credential(s); vault key id {rotation.key_id}")
