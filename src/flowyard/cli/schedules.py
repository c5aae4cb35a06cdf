"""``flowyard schedules ...``: schedules from the command line, through the service (directly
on the database, audited as ``cli:<os user>``). What they print is the API's shape."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowyard.bootstrap import Container
from flowyard.cli.common import DbOption, cli_actor, fail, out, parse_json_option, with_container
from flowyard.domain.auth import AuditEntry
from flowyard.domain.schedules import CatchUp, Overlap
from flowyard.service.schedules import ScheduleChange, ScheduleView

schedules_app = typer.Typer(
    help="Manage schedules: workflows started by cron or at fixed intervals.",
    no_args_is_help=True,
)

RefArgument = Annotated[str, typer.Argument(help="Schedule id or name", show_default=False)]


def _shown(view: ScheduleView) -> dict[str, Any]:
    from flowyard.api.routers.schedules import SchedulePublic

    shown: dict[str, Any] = SchedulePublic.of(view).model_dump(mode="json")
    return shown


def _audit(action: str, ref: str) -> AuditEntry:
    return AuditEntry(action, cli_actor(), "schedule", ref, source_ip="cli")


def _start_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--start-at {value!r} is not an ISO 8601 time (2026-12-01T09:00:00+01:00)")
    if when.tzinfo is None:
        fail(f"--start-at {value!r} needs an offset (2026-12-01T09:00:00+01:00 or ...Z)")
    return when


@schedules_app.command("create")
def schedules_create(
    name: Annotated[str, typer.Argument(help="A name (letters, digits, _.:-)")],
    workflow: Annotated[str, typer.Option(help="Workflow id or name (its latest version runs)")],
    cron: Annotated[
        str | None, typer.Option(help="'0 2 * * *' (5 fields, or 6 with seconds first)")
    ] = None,
    every: Annotated[str | None, typer.Option(help="A fixed interval: 30s, 5m, 1h")] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone of the cron")] = "UTC",
    start_at: Annotated[
        str | None, typer.Option(help="First tick of an interval (ISO 8601 with offset)")
    ] = None,
    input: Annotated[str | None, typer.Option("--input", help="Run input JSON (or @file)")] = None,
    catch_up: Annotated[CatchUp, typer.Option(help="Missed ticks")] = CatchUp.SKIP,
    max_catch_up: Annotated[int, typer.Option(help="At most this many for catch_up=all")] = 10,
    jitter_s: Annotated[float, typer.Option("--jitter", help="Delay each tick by [0, s]")] = 0.0,
    overlap: Annotated[Overlap, typer.Option(help="While the previous run runs")] = Overlap.ALLOW,
    misfire_grace_s: Annotated[
        float, typer.Option("--misfire-grace", help="Later than this: missed")
    ] = 60.0,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused")] = False,
    db: DbOption = None,
) -> None:
    """Create a schedule; prints it as JSON (with its next 5 fire times)."""
    change = ScheduleChange(
        name=name,
        workflow=workflow,
        cron=cron,
        every=every,
        timezone=timezone,
        start_at=_start_at(start_at),
        input=parse_json_option(input, "--input") if input is not None else {},
        catch_up=catch_up,
        max_catch_up=max_catch_up,
        jitter_s=jitter_s,
        overlap=overlap,
        misfire_grace_s=misfire_grace_s,
        enabled=not paused,
    )

    async def fn(container: Container) -> dict[str, Any]:
        view = await container.schedules.create(
            change, actor=cli_actor(), audit=_audit("schedule.create", name)
        )
        return _shown(view)

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


@schedules_app.command("list")
def schedules_list(
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's")] = None,
    db: DbOption = None,
) -> None:
    """List the schedules with their next fire time."""

    async def fn(container: Container) -> list[dict[str, Any]]:
        views = await container.schedules.list_schedules(limit=1000, workflow=workflow)
        return [_shown(v) for v in views]

    table = Table("name", "workflow", "timetable", "enabled", "next fire", "fired", "missed")
    for row in with_container(db, fn, check_keys=False):
        cron = row["cron"]
        timetable = f"{cron} ({row['timezone']})" if cron else f"every {row['every']}"
        nxt = row["next_fire_times"][0] if row["next_fire_times"] else ""
        cells = [row["name"], row["workflow"], timetable, row["enabled"], nxt]
        cells += [row["fired"], row["missed"]]
        table.add_row(*(escape(str(c)) for c in cells))
    (out if out.is_terminal else Console(width=200)).print(table)


@schedules_app.command("show")
def schedules_show(ref: RefArgument, db: DbOption = None) -> None:
    """Show a schedule as JSON, with its next 5 fire times."""

    async def fn(container: Container) -> dict[str, Any]:
        return _shown(await container.schedules.get(ref))

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


@schedules_app.command("pause")
def schedules_pause(ref: RefArgument, db: DbOption = None) -> None:
    """Stop firing (ticks while paused are never fired)."""

    async def fn(container: Container) -> dict[str, Any]:
        return _shown(await container.schedules.pause(ref, audit=_audit("schedule.pause", ref)))

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


@schedules_app.command("resume")
def schedules_resume(ref: RefArgument, db: DbOption = None) -> None:
    """Fire again from the next tick after now."""

    async def fn(container: Container) -> dict[str, Any]:
        view = await container.schedules.resume(ref, audit=_audit("schedule.resume", ref))
        return _shown(view)

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


@schedules_app.command("trigger")
def schedules_trigger(ref: RefArgument, db: DbOption = None) -> None:
    """Fire once now (a worker runs it); prints the tick (its run id, or why it was
    skipped)."""

    async def fn(container: Container) -> dict[str, Any]:
        from flowyard.api.routers.schedules import FirePublic

        fired = await container.schedules.trigger(ref, audit=_audit("schedule.trigger", ref))
        shown: dict[str, Any] = FirePublic.of(fired).model_dump(mode="json")
        return shown

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


@schedules_app.command("delete")
def schedules_delete(ref: RefArgument, db: DbOption = None) -> None:
    """Delete a schedule and its fired ticks; the runs it started stay."""

    async def fn(container: Container) -> None:
        await container.schedules.delete(ref, audit=_audit("schedule.delete", ref))

    with_container(db, fn, check_keys=False)
    out.print(f"deleted schedule {escape(ref)}")
