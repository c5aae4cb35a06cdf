"""``flowyard quotas ...`` and ``flowyard credentials quota ...``: provider quotas from the
command line (directly on the database, audited as ``cli:<os user>``). A credential's quota
is the quota keyed ``credential:<name>``: both commands manage the same row."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowyard.bootstrap import Container
from flowyard.cli.common import DbOption, cli_actor, fail, out, with_container
from flowyard.domain.auth import AuditEntry
from flowyard.domain.quotas import QuotaState

quotas_app = typer.Typer(
    help="Manage provider quotas: rates and concurrency limits shared by every worker.",
    no_args_is_help=True,
)
credential_quota_app = typer.Typer(
    help="Manage a credential's quota (the quota keyed credential:<name>).", no_args_is_help=True
)

KeyArgument = Annotated[
    str, typer.Argument(help="credential:<name> or node_type:<type>", show_default=False)
]
NameArgument = Annotated[str, typer.Argument(help="The credential's name", show_default=False)]
RateArgument = Annotated[
    str | None,
    typer.Argument(help="'100 per 20s', '5/s', '300 per minute' (omit: no rate)"),
]
BurstOption = Annotated[
    int | None, typer.Option(help="How many may start at once (default 1: evenly spaced)")
]
ConcurrencyOption = Annotated[
    int | None, typer.Option(help="At most this many steps in flight at once (every worker)")
]
DisabledOption = Annotated[bool, typer.Option("--disabled", help="Keep it, do not apply it")]


def _shown(state: QuotaState, container: Container) -> dict[str, object]:
    q, b = state.quota, state.bucket
    now = container.clock()
    return {
        "key": q.key,
        "rate": q.rate,
        "burst": q.burst,
        "concurrency": q.concurrency,
        "enabled": q.enabled,
        "available": round(state.available_at(now), 3),
        "in_flight": state.slots.in_flight,
        "paused_until": (
            b.paused_until.isoformat() if b.paused_until and b.paused_until > now else None
        ),
        "created_at": state.created_at.isoformat(),
    }


def _entry(action: str, key: str) -> AuditEntry:
    return AuditEntry(action, cli_actor(), "quota", key, source_ip="cli")


def _print(
    db: str | None, fn: Callable[[Container], Awaitable[QuotaState | None]], missing: str
) -> None:
    """Run ``fn`` and print the quota it answers as JSON (``missing`` when it has none)."""

    async def shown(container: Container) -> dict[str, object] | None:
        state = await fn(container)
        return None if state is None else _shown(state, container)

    result = with_container(db, shown, check_keys=False)
    if result is None:
        fail(missing)
    out.print_json(json.dumps(result))


def _put(
    db: str | None,
    method: Callable[[Container], Callable[..., Awaitable[QuotaState]]],
    target: str,
    key: str,
    rate: str | None,
    burst: int | None,
    concurrency: int | None,
    disabled: bool,
) -> None:
    """Set a quota through ``method`` (by key, or on a credential) and print it."""
    _print(
        db,
        lambda c: method(c)(
            target,
            rate,
            burst=burst,
            concurrency=concurrency,
            enabled=not disabled,
            audit=_entry("quota.put", key),
        ),
        "",
    )


def _key_put(container: Container) -> Callable[..., Awaitable[QuotaState]]:
    return container.quotas.put


@quotas_app.command("set")
def quotas_set(
    key: KeyArgument,
    rate: RateArgument = None,
    burst: BurstOption = None,
    concurrency: ConcurrencyOption = None,
    disabled: DisabledOption = False,
    db: DbOption = None,
) -> None:
    """Create or change a quota (a rate, a concurrency limit, or both); prints it as JSON."""
    _put(db, _key_put, key, key, rate, burst, concurrency, disabled)


@quotas_app.command("list")
def quotas_list(db: DbOption = None) -> None:
    """List the quotas, their buckets and slots now."""

    async def fn(container: Container) -> list[dict[str, object]]:
        return [_shown(s, container) for s in await container.quotas.list()]

    table = Table("key", "rate", "burst", "concurrency", "in flight", "enabled", "available")
    table.add_column("paused until")
    for row in with_container(db, fn, check_keys=False):
        cells = [row["key"], row["rate"] or "", row["burst"], row["concurrency"] or ""]
        cells += [row["in_flight"], row["enabled"], row["available"], row["paused_until"] or ""]
        table.add_row(*(escape(str(c)) for c in cells))
    (out if out.is_terminal else Console(width=200)).print(table)


@quotas_app.command("delete")
def quotas_delete(key: KeyArgument, db: DbOption = None) -> None:
    """Delete a quota: its steps are no longer paced."""

    async def fn(container: Container) -> None:
        await container.quotas.delete(key, audit=_entry("quota.delete", key))

    with_container(db, fn, check_keys=False)
    out.print(f"deleted quota {escape(key)}")


def _credential_put(container: Container) -> Callable[..., Awaitable[QuotaState]]:
    return container.quotas.put_for_credential


@credential_quota_app.command("set")
def credential_quota_set(
    name: NameArgument,
    rate: RateArgument = None,
    burst: BurstOption = None,
    concurrency: ConcurrencyOption = None,
    disabled: DisabledOption = False,
    db: DbOption = None,
) -> None:
    """Create or change the credential's quota; prints it as JSON."""
    _put(db, _credential_put, name, f"credential:{name}", rate, burst, concurrency, disabled)


@credential_quota_app.command("show")
def credential_quota_show(name: NameArgument, db: DbOption = None) -> None:
    """Print the credential's quota (with its bucket and slots now) as JSON."""
    _print(
        db,
        lambda c: c.quotas.find_for_credential(name),
        f"credential {name!r} has no quota",
    )


@credential_quota_app.command("delete")
def credential_quota_delete(name: NameArgument, db: DbOption = None) -> None:
    """Delete the credential's quota: its steps are no longer paced."""

    async def fn(container: Container) -> None:
        entry = _entry("quota.delete", f"credential:{name}")
        await container.quotas.delete_for_credential(name, audit=entry)

    with_container(db, fn, check_keys=False)
    out.print(f"deleted the quota of credential {escape(name)}")
