"""``flowyard hooks ...``: webhook triggers from the command line (directly on the database,
audited as ``cli:<os user>``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowyard.bootstrap import Container
from flowyard.cli.common import (
    DbOption,
    cli_actor,
    fail,
    out,
    parse_json_option,
    with_container,
)
from flowyard.domain.auth import AuditEntry
from flowyard.domain.hooks import HookRecord
from flowyard.service.hooks import parse_config

hooks_app = typer.Typer(
    help="Manage webhook triggers: public URLs that start runs.", no_args_is_help=True
)

RefArgument = Annotated[str, typer.Argument(help="The hook's id or name", show_default=False)]


def _shown(hook: HookRecord) -> dict[str, Any]:
    return {
        "id": hook.id,
        "name": hook.name,
        "workflow": hook.workflow_name,
        "enabled": hook.enabled,
        "url": f"/api/v1/hooks/{hook.id}",
        "path_url": f"/api/v1/hooks/by-path/{hook.path}" if hook.path else None,
        "config": hook.config.model_dump(mode="json"),
    }


def _config(scheme: str, credential: str, extra: str | None) -> dict[str, Any]:
    """``--config`` (JSON, or ``@file``) with ``--scheme``/``--credential`` as its auth."""
    raw = parse_json_option(extra, "--config") or {}
    if not isinstance(raw, dict):
        fail("--config must be a JSON object", code=2)
    return {**raw, "auth": {"scheme": scheme, "credential": credential, **raw.get("auth", {})}}


@hooks_app.command("create")
def hooks_create(
    name: Annotated[str, typer.Argument(help="The hook's name", show_default=False)],
    workflow: Annotated[str, typer.Option(help="Workflow id or name", show_default=False)],
    scheme: Annotated[str, typer.Option(help="hmac, twilio, meta or header_token")],
    credential: Annotated[str, typer.Option(help="The vault credential of the scheme")],
    path: Annotated[str | None, typer.Option(help="A readable path (not a secret)")] = None,
    config: Annotated[
        str | None,
        typer.Option(help="More fields as JSON or @file: input, dedupe, respond, ..."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Create a hook; prints it (with its URL) as JSON."""
    fields = _config(scheme, credential, config)

    async def fn(container: Container) -> dict[str, Any]:
        entry = AuditEntry("hook.create", cli_actor(), "hook", name, source_ip="cli")
        hook = await container.hooks.create(
            name=name,
            workflow=workflow,
            config=parse_config(fields),
            path=path,
            actor=cli_actor(),
            audit=entry,
        )
        return _shown(hook)

    out.print_json(json.dumps(with_container(db, fn)))


@hooks_app.command("list")
def hooks_list(
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's hooks")] = None,
    db: DbOption = None,
) -> None:
    """List the hooks."""

    async def fn(container: Container) -> list[HookRecord]:
        return await container.hooks.list(workflow=workflow, limit=1000)

    table = Table("name", "id", "workflow", "scheme", "enabled", "path")
    for hook in with_container(db, fn, check_keys=False):
        cells = [hook.name, hook.id, hook.workflow_name, hook.config.auth.scheme.value]
        cells += [str(hook.enabled), hook.path or ""]
        table.add_row(*(escape(c) for c in cells))
    (out if out.is_terminal else Console(width=200)).print(table)


@hooks_app.command("get")
def hooks_get(ref: RefArgument, db: DbOption = None) -> None:
    """Show a hook as JSON."""

    async def fn(container: Container) -> dict[str, Any]:
        return _shown(await container.hooks.get(ref))

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


def _switch(ref: str, enabled: bool, db: str | None) -> None:
    async def fn(container: Container) -> HookRecord:
        entry = AuditEntry("hook.update", cli_actor(), "hook", ref, source_ip="cli")
        return await container.hooks.update(ref, enabled=enabled, audit=entry)

    hook = with_container(db, fn, check_keys=False)
    out.print(f"hook {escape(hook.name)} {'enabled' if enabled else 'disabled'}")


@hooks_app.command("enable")
def hooks_enable(ref: RefArgument, db: DbOption = None) -> None:
    """Enable a hook: its URL starts runs again."""
    _switch(ref, True, db)


@hooks_app.command("disable")
def hooks_disable(ref: RefArgument, db: DbOption = None) -> None:
    """Disable a hook: its URL answers 404 until it is enabled."""
    _switch(ref, False, db)


@hooks_app.command("delete")
def hooks_delete(ref: RefArgument, db: DbOption = None) -> None:
    """Delete a hook."""

    async def fn(container: Container) -> None:
        entry = AuditEntry("hook.delete", cli_actor(), "hook", ref, source_ip="cli")
        await container.hooks.delete(ref, audit=entry)

    with_container(db, fn, check_keys=False)
    out.print(f"deleted hook {escape(ref)}")
