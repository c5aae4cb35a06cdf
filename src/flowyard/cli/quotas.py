"""``flowyard quotas ...``: provider quotas from the command line (directly on the
database, audited as ``cli:<os user>``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowyard.bootstrap import Container
from flowyard.cli.common import DbOption, cli_actor, out, with_container
from flowyard.domain.auth import AuditEntry
from flowyard.domain.quotas import QuotaState

quotas_app = typer.Typer(
    help="Manage provider quotas: rates shared by every worker.", no_args_is_help=True
)

KeyArgument = Annotated[
    str, typer.Argument(help="credential:<name> or node_type:<type>", show_default=False)
]


def _shown(state: QuotaState, container: Container) -> dict[str, object]:
    q, b = state.quota, state.bucket
    now = container.clock()
    return {
        "key": q.key,
        "rate": q.rate,
        "burst": q.burst,
        "enabled": q.enabled,
        "available": round(state.available_at(now), 3),
        "paused_until": (
            b.paused_until.isoformat() if b.paused_until and b.paused_until > now else None
        ),
        "created_at": state.created_at.isoformat(),
    }


@quotas_app.command("set")
def quotas_set(
    key: KeyArgument,
    rate: Annotated[str, typer.Argument(help="'100 per 20s', '5/s', '300 per minute'")],
    burst: Annotated[
        int | None, typer.Option(help="How many may start at once (default 1: evenly spaced)")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Keep it, do not apply it")] = False,
    db: DbOption = None,
) -> None:
    """Create or change a quota; prints it as JSON."""

    async def fn(container: Container) -> dict[str, object]:
        entry = AuditEntry("quota.put", cli_actor(), "quota", key, source_ip="cli")
        state = await container.quotas.put(
            key, rate, burst=burst, enabled=not disabled, audit=entry
        )
        return _shown(state, container)

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


@quotas_app.command("list")
def quotas_list(db: DbOption = None) -> None:
    """List the quotas and their buckets now."""

    async def fn(container: Container) -> list[dict[str, object]]:
        return [_shown(s, container) for s in await container.quotas.list()]

    table = Table("key", "rate", "burst", "enabled", "available", "paused until")
    for row in with_container(db, fn, check_keys=False):
        cells = [row["key"], row["rate"], row["burst"], row["enabled"], row["available"]]
        cells.append(row["paused_until"] or "")
        table.add_row(*(escape(str(c)) for c in cells))
    (out if out.is_terminal else Console(width=200)).print(table)


@quotas_app.command("delete")
def quotas_delete(key: KeyArgument, db: DbOption = None) -> None:
    """Delete a quota: its steps are no longer paced."""

    async def fn(container: Container) -> None:
        entry = AuditEntry("quota.delete", cli_actor(), "quota", key, source_ip="cli")
        await container.quotas.delete(key, audit=entry)

    with_container(db, fn, check_keys=False)
    out.print(f"deleted quota {escape(key)}")
