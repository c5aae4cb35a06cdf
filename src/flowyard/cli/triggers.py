"""``flowyard triggers ...``: event triggers from the command line (directly on the
database, audited as ``cli:<os user>``), and ``flowyard triggers emit`` to post an event."""

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
from flowyard.domain.triggers import EventTriggerRecord, is_event_name
from flowyard.service.triggers import parse_trigger

triggers_app = typer.Typer(
    help="Manage event triggers: a run's end or a named event starts a workflow.",
    no_args_is_help=True,
)

RefArgument = Annotated[str, typer.Argument(help="The trigger's id or name", show_default=False)]


def _on(t: EventTriggerRecord) -> str:
    if t.event is not None:
        return f"event {t.event}"
    return f"run of {t.source_workflow_name} {'|'.join(s.value for s in t.config.statuses)}"


def _shown(t: EventTriggerRecord) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "workflow": t.workflow_name,
        "on": _on(t),
        "enabled": t.enabled,
        "config": t.config.model_dump(mode="json"),
    }


@triggers_app.command("create")
def triggers_create(
    name: Annotated[str, typer.Argument(help="The trigger's name", show_default=False)],
    workflow: Annotated[str, typer.Option(help="The workflow it starts", show_default=False)],
    event: Annotated[str | None, typer.Option(help="Start on this named event")] = None,
    after: Annotated[
        str | None, typer.Option(help="Start when a run of this workflow ends")
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(help="With --after: the ended statuses (default succeeded and failed)"),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(help="More fields as JSON or @file: filter, input, debounce, throttle"),
    ] = None,
    db: DbOption = None,
) -> None:
    """Create an event trigger; prints it as JSON."""
    if (event is None) == (after is None):
        fail("give exactly one of --event and --after", code=2)
    raw = parse_json_option(config, "--config") or {}
    if not isinstance(raw, dict):
        fail("--config must be a JSON object", code=2)
    on: dict[str, Any] = {"event": event}
    if after is not None:
        on = {"run": {"workflow": after, **({"statuses": status} if status else {})}}

    async def fn(container: Container) -> dict[str, Any]:
        parsed_on, parsed = parse_trigger({**raw, "on": on})
        entry = AuditEntry("event_trigger.create", cli_actor(), "event_trigger", name)
        entry.source_ip = "cli"
        made = await container.triggers.create(
            name=name,
            workflow=workflow,
            on=parsed_on,
            config=parsed,
            actor=cli_actor(),
            audit=entry,
        )
        return _shown(made)

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


@triggers_app.command("list")
def triggers_list(
    workflow: Annotated[str | None, typer.Option(help="Only triggers starting it")] = None,
    event: Annotated[str | None, typer.Option(help="Only triggers of this event")] = None,
    db: DbOption = None,
) -> None:
    """List the event triggers."""

    async def fn(container: Container) -> list[EventTriggerRecord]:
        return await container.triggers.list(workflow=workflow, event=event, limit=1000)

    table = Table("name", "id", "workflow", "on", "enabled")
    for t in with_container(db, fn, check_keys=False):
        cells = [t.name, t.id, t.workflow_name, _on(t), str(t.enabled)]
        table.add_row(*(escape(c) for c in cells))
    (out if out.is_terminal else Console(width=200)).print(table)


@triggers_app.command("get")
def triggers_get(ref: RefArgument, db: DbOption = None) -> None:
    """Show an event trigger as JSON."""

    async def fn(container: Container) -> dict[str, Any]:
        return _shown(await container.triggers.get(ref))

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


def _switch(ref: str, enabled: bool, db: str | None) -> None:
    async def fn(container: Container) -> EventTriggerRecord:
        entry = AuditEntry("event_trigger.update", cli_actor(), "event_trigger", ref)
        entry.source_ip = "cli"
        return await container.triggers.update(ref, enabled=enabled, audit=entry)

    made = with_container(db, fn, check_keys=False)
    out.print(f"event trigger {escape(made.name)} {'enabled' if enabled else 'disabled'}")


@triggers_app.command("enable")
def triggers_enable(ref: RefArgument, db: DbOption = None) -> None:
    """Enable an event trigger."""
    _switch(ref, True, db)


@triggers_app.command("disable")
def triggers_disable(ref: RefArgument, db: DbOption = None) -> None:
    """Disable an event trigger: it starts nothing until enabled."""
    _switch(ref, False, db)


@triggers_app.command("delete")
def triggers_delete(ref: RefArgument, db: DbOption = None) -> None:
    """Delete an event trigger and its pending debounced starts."""

    async def fn(container: Container) -> None:
        entry = AuditEntry("event_trigger.delete", cli_actor(), "event_trigger", ref)
        entry.source_ip = "cli"
        await container.triggers.delete(ref, audit=entry)

    with_container(db, fn, check_keys=False)
    out.print(f"deleted event trigger {escape(ref)}")


@triggers_app.command("emit")
def triggers_emit(
    name: Annotated[str, typer.Argument(help="The event's name", show_default=False)],
    payload: Annotated[str | None, typer.Option(help="The payload as JSON or @file")] = None,
    event_id: Annotated[str | None, typer.Option(help="An id that de-duplicates")] = None,
    db: DbOption = None,
) -> None:
    """Post a named event: starts every subscribed workflow; prints each trigger's outcome."""
    if not is_event_name(name):
        fail(f"{name!r} is not an event name", code=2)
    body = parse_json_option(payload, "--payload")

    async def fn(container: Container) -> list[dict[str, Any]]:
        entry = AuditEntry("event.post", cli_actor(), "event", name)
        entry.source_ip = "cli"
        posted = await container.triggers.post_event(name, body, event_id=event_id, audit=entry)
        return [
            {
                "trigger": o.trigger.name,
                "outcome": o.outcome,
                "run_id": o.gated.run.id if o.gated and o.gated.run else None,
                "error": o.error,
            }
            for o in posted.outcomes
        ]

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))
