"""``flowyard campaigns ...``: start a campaign from a JSON, NDJSON or CSV file, follow its
progress (a bar, counts by status, rate, ETA; ``--watch`` refreshes until every run ended),
page its runs, and pause, resume, cancel or retry it as a whole. Through the service,
directly on the database, audited as ``cli:<os user>``; what is printed as JSON is the
API's shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from flowyard.api.campaign_schemas import CampaignPublic
from flowyard.api.schemas import RunPublic
from flowyard.bootstrap import Container
from flowyard.campaigns.items import ItemFormat
from flowyard.cli.common import (
    DbOption,
    cli_actor,
    err,
    fail,
    open_container,
    out,
    parse_json_option,
    read_json,
    run_async,
    settings_for,
    with_container,
)
from flowyard.domain.auth import AuditEntry
from flowyard.domain.campaigns import CampaignRecord
from flowyard.domain.priorities import BULK, DEFAULT_WEIGHT, MAX_PRIORITY, MIN_PRIORITY
from flowyard.domain.statuses import RunStatus
from flowyard.service import LimitsSpec

campaigns_app = typer.Typer(
    help="Campaigns: one run of a workflow per item of a file, tracked as a whole.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(help="Campaign id", show_default=False)]

#: File name endings that say the format when --format is not given.
_SUFFIXES = {
    ".json": ItemFormat.JSON,
    ".ndjson": ItemFormat.NDJSON,
    ".jsonl": ItemFormat.NDJSON,
    ".csv": ItemFormat.CSV,
}
#: Run statuses in the order the status lines show them.
_ORDER = list(RunStatus)
_STYLE = {
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.TIMED_OUT: "red",
    RunStatus.CANCELLED: "dim",
    RunStatus.PAUSED: "yellow",
}


def _audit(action: str, campaign_id: str | None) -> AuditEntry:
    return AuditEntry(action, cli_actor(), "campaign", campaign_id, source_ip="cli")


def _public(record: CampaignRecord, container: Container) -> dict[str, Any]:
    shown: dict[str, Any] = CampaignPublic.of(record, container.service.clock()).model_dump(
        mode="json"
    )
    return shown


def _format_of(path: Path, given: ItemFormat | None) -> ItemFormat:
    if given is not None:
        return given
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        fail(
            f"cannot tell the format of {path} from its name: pass --format json, ndjson or csv",
            code=2,
        )
    return fmt


def _open_items(path: Path, fmt: ItemFormat, limit: int) -> IO[bytes] | list[Any]:
    """The items of ``path`` (``-``: stdin): a JSON array parsed, or a byte stream of NDJSON or
    CSV. A file larger than ``limit`` bytes (the API's body limit) is refused, as the API
    would refuse it."""
    if str(path) != "-":
        try:
            size = path.stat().st_size
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}", code=2)
        if size > limit:
            fail(f"{path} holds {size} bytes, over {limit} (FLOWYARD_MAX_CAMPAIGN_BYTES)", code=2)
    if fmt == ItemFormat.JSON:
        items = read_json(path)
        if not isinstance(items, list):
            fail(f"{path} is not a JSON array of items (for one item a line, use NDJSON)", code=2)
        return items
    if str(path) != "-":
        try:
            return path.open("rb")
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}", code=2)
    stream: IO[bytes] = tempfile.SpooledTemporaryFile(1024 * 1024)  # noqa: SIM115
    copied = 0
    while block := sys.stdin.buffer.read(1024 * 1024):
        copied += len(block)
        if copied > limit:
            fail(f"stdin holds more than {limit} bytes (FLOWYARD_MAX_CAMPAIGN_BYTES)", code=2)
        stream.write(block)
    stream.seek(0)
    return stream


@campaigns_app.command("start")
def campaigns_start(
    file: Annotated[Path, typer.Argument(help="Items: a .json array, .ndjson or .csv (-: stdin)")],
    workflow: Annotated[str, typer.Option(help="Workflow id or name (its latest version runs)")],
    name: Annotated[str, typer.Option(help="Campaign name (unique within the workflow)")],
    item_key: Annotated[
        str | None,
        typer.Option(help="Each run's correlation key: '{{ item.email }}' (unique in it)"),
    ] = None,
    fmt: Annotated[
        ItemFormat | None, typer.Option("--format", help="Items format (default: by suffix)")
    ] = None,
    vars: Annotated[str | None, typer.Option("--vars", help="Vars of every run (JSON)")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Posting again with this key returns the campaign")
    ] = None,
    priority: Annotated[
        int, typer.Option(help=f"Claim priority of its steps ({MIN_PRIORITY}-{MAX_PRIORITY})")
    ] = BULK,
    weight: Annotated[
        int, typer.Option(help="Share of the workers among campaigns of its priority")
    ] = DEFAULT_WEIGHT,
    concurrency: Annotated[
        int | None, typer.Option(help="Most steps of the campaign in flight at once")
    ] = None,
    rate: Annotated[str | None, typer.Option(help="Most step starts: '10/s'")] = None,
    concurrency_key: Annotated[
        str | None, typer.Option(help="Each item's key for the key limits: '{{ item.tenant }}'")
    ] = None,
    key_concurrency: Annotated[
        int | None, typer.Option(help="Most steps in flight per concurrency key")
    ] = None,
    key_rate: Annotated[str | None, typer.Option(help="Most step starts per key")] = None,
    db: DbOption = None,
) -> None:
    """Start one run per item, all or none (a bad item is named and nothing starts); prints
    the campaign as JSON. The same campaign and items again: the existing one, exit 0.
    Its steps are claimed at --priority, sharing the workers by --weight; the limits are
    quotas every worker shares (decision 0032)."""
    settings = settings_for(db)
    if str(file) == "-" and fmt is None:
        fail("reading items from stdin needs --format json, ndjson or csv", code=2)
    kind = _format_of(file, fmt)
    run_vars = parse_json_option(vars, "--vars")
    if run_vars is not None and not isinstance(run_vars, dict):
        fail("--vars is not a JSON object", code=2)
    source = _open_items(file, kind, settings.max_campaign_bytes)

    async def main() -> tuple[dict[str, Any], bool]:
        container = await open_container(settings, check_keys=False)
        try:
            campaign, created = await container.service.start_campaign(
                workflow,
                name,
                kind,
                source,
                item_key=item_key,
                vars=run_vars,
                priority=priority,
                weight=weight,
                limits=LimitsSpec(concurrency, rate, key_concurrency, key_rate),
                concurrency_key=concurrency_key,
                idempotency_key=idempotency_key,
                actor=cli_actor(),
                audit=_audit("campaign.start", None),
            )
            return _public(campaign, container), created
        finally:
            await container.close()

    try:
        shown, created = run_async(main)
    finally:
        if not isinstance(source, list):
            source.close()
    if not created:
        err.print(
            f"flowyard: campaign {shown['id']} was started before with these items",
            highlight=False,
            markup=False,
        )
    out.print_json(json.dumps(shown))


def render(shown: dict[str, Any]) -> Group:
    """A campaign's progress: a bar, the counts by status, the rate and the ETA."""
    total, finished = shown["total"], shown["finished"]
    head = Text(f"campaign {shown['id']} ", style="bold")
    head.append(repr(shown["name"]), style="")
    head.append(f" {shown['status']}")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(total, 1), completed=finished, width=40),
        Text(f"{finished:,}/{total:,}  {100 * finished / max(total, 1):.1f} %"),
    )
    counts = Text()
    for status in _ORDER:
        n = shown["counts"].get(status.value, 0)
        if n:
            if counts:
                counts.append(" · ")
            counts.append(f"{status.value} {n:,}", style=_STYLE.get(status, ""))
    eta = shown["eta_s"]
    rate = Text(
        f"rate {shown['rate_per_s']:,.1f} runs/s over the last minute · ETA "
        + ("unknown" if eta is None else f"{eta:,.0f} s")
    )
    return Group(head, bar, counts or Text("no runs counted yet"), rate, _steering(shown))


def _steering(shown: dict[str, Any]) -> Text:
    """The campaign's priority, weight and limits (what ``campaigns set`` changes)."""
    limits = ", ".join(
        f"{name.replace('_', ' ')} {value}"
        for name, value in (shown.get("limits") or {}).items()
        if value is not None
    )
    return Text(
        f"priority {shown['priority']} · weight {shown['weight']} · limits " + (limits or "none"),
        style="dim",
    )


@campaigns_app.command("status")
def campaigns_status(
    campaign_id: IdArgument,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until every run ended")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes", min=0.1)] = 1.0,
    timeout: Annotated[
        float | None, typer.Option(help="With --watch: give up after this many seconds")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the campaign as JSON")] = False,
    db: DbOption = None,
) -> None:
    """A campaign's progress (counters, not a count over its runs)."""
    settings = settings_for(db)

    async def main() -> dict[str, Any]:
        container = await open_container(settings, check_keys=False)
        try:
            shown = _public(await container.service.get_campaign(campaign_id), container)
            if not watch:
                return shown
            deadline = None if timeout is None else time.monotonic() + timeout
            live = (
                Live(render(shown), console=out, refresh_per_second=4)
                if out.is_terminal and not as_json
                else contextlib.nullcontext()
            )
            with live:
                while shown["finished"] < shown["total"]:
                    if deadline is not None and time.monotonic() >= deadline:
                        fail(
                            f"campaign {campaign_id}: {shown['total'] - shown['finished']} "
                            f"run(s) unfinished after {timeout:g} s"
                        )
                    await asyncio.sleep(interval)
                    shown = _public(await container.service.get_campaign(campaign_id), container)
                    if isinstance(live, Live):
                        live.update(render(shown))
            return shown
        finally:
            await container.close()

    shown = run_async(main)
    if as_json:
        out.print_json(json.dumps(shown))
    elif not (watch and out.is_terminal):  # Live left its last frame on the terminal
        out.print(render(shown), highlight=False)


@campaigns_app.command("list")
def campaigns_list(
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    db: DbOption = None,
) -> None:
    """Campaigns newest first, with their progress."""

    async def fn(container: Container) -> list[dict[str, Any]]:
        rows = await container.service.list_campaigns(workflow=workflow, limit=limit)
        return [_public(c, container) for c in rows]

    table = Table("id", "name", "status", "finished", "total", "runs/s", "created")
    for row in with_container(db, fn, check_keys=False):
        cells = [row["id"], row["name"], row["status"], row["finished"], row["total"]]
        cells += [row["rate_per_s"], row["created_at"]]
        table.add_row(*(escape(str(c)) for c in cells))
    (out if out.is_terminal else Console(width=200)).print(table)


@campaigns_app.command("runs")
def campaigns_runs(
    campaign_id: IdArgument,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only the run of this key")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    after: Annotated[str | None, typer.Option(help="Runs after this run id (a page)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON")] = False,
    db: DbOption = None,
) -> None:
    """A campaign's runs in the order they were started."""

    async def fn(container: Container) -> list[dict[str, Any]]:
        rows = await container.service.list_campaign_runs(
            campaign_id, status=status, correlation_key=key, after=after, limit=limit + 1
        )
        return [RunPublic.of(r).model_dump(mode="json") for r in rows]

    rows = with_container(db, fn, check_keys=False)
    more = len(rows) > limit
    rows = rows[:limit]
    if as_json:
        out.print_json(json.dumps({"items": rows, "next_cursor": rows[-1]["id"] if more else None}))
        return
    table = Table("run", "status", "key", "created")
    for row in rows:
        cells = [row["id"], row["status"], row["correlation_key"] or "", row["created_at"]]
        table.add_row(*(escape(str(c)) for c in cells))
    (out if out.is_terminal else Console(width=200)).print(table)
    if more:
        err.print(f"more: --after {rows[-1]['id']}", highlight=False, markup=False)


def _limit_option(value: str | None, option: str, *, count: bool) -> tuple[bool, Any]:
    """(given, value) of a limit option: ``none`` removes the limit; a count is an integer."""
    if value is None:
        return False, None
    if value.strip().lower() == "none":
        return True, None
    if not count:
        return True, value
    try:
        return True, int(value)
    except ValueError:
        fail(f"{option} must be an integer or none, not {value!r}", code=2)


@campaigns_app.command("set")
def campaigns_set(
    campaign_id: IdArgument,
    priority: Annotated[
        int | None,
        typer.Option(help=f"New claim priority of its steps ({MIN_PRIORITY}-{MAX_PRIORITY})"),
    ] = None,
    weight: Annotated[
        int | None, typer.Option(help="New share of the workers among campaigns of its priority")
    ] = None,
    concurrency: Annotated[
        str | None, typer.Option(help="Most steps in flight at once (none: no limit)")
    ] = None,
    rate: Annotated[
        str | None, typer.Option(help="Most step starts: '10/s' (none: no limit)")
    ] = None,
    key_concurrency: Annotated[
        str | None, typer.Option(help="Most steps in flight per concurrency key (none: no limit)")
    ] = None,
    key_rate: Annotated[
        str | None, typer.Option(help="Most step starts per key (none: no limit)")
    ] = None,
    db: DbOption = None,
) -> None:
    """Change a running campaign's priority, weight or limits (what is not given is kept);
    its unfinished runs' steps take the new priority by chunks. Prints the campaign as
    JSON, and on stderr how many steps moved."""
    limits: dict[str, Any] = {}
    for name, value, count in (
        ("concurrency", concurrency, True),
        ("rate", rate, False),
        ("key_concurrency", key_concurrency, True),
        ("key_rate", key_rate, False),
    ):
        given, parsed = _limit_option(value, "--" + name.replace("_", "-"), count=count)
        if given:
            limits[name] = parsed
    if priority is None and weight is None and not limits:
        fail("nothing to change: give --priority, --weight or a limit", code=2)

    async def fn(container: Container) -> tuple[dict[str, Any], int]:
        changed = await container.service.update_campaign(
            campaign_id,
            priority=priority,
            weight=weight,
            limits=limits or None,
            audit=_audit("campaign.update", campaign_id),
        )
        return _public(changed.campaign, container), changed.steps

    shown, moved = with_container(db, fn, check_keys=False)
    if priority is not None:
        err.print(
            f"flowyard: {moved:,} unfinished step(s) took priority {priority}",
            highlight=False,
            markup=False,
        )
    out.print_json(json.dumps(shown))


def _act(campaign_id: str, action: str, audited: str, db: str | None) -> None:
    async def fn(container: Container) -> dict[str, Any]:
        done = await container.service.campaign_action(
            campaign_id, action, actor=cli_actor(), audit=_audit(audited, campaign_id)
        )
        return {
            "campaign": _public(done.campaign, container),
            "moved": done.moved,
            "skipped": done.skipped,
        }

    out.print_json(json.dumps(with_container(db, fn, check_keys=False)))


@campaigns_app.command("pause")
def campaigns_pause(campaign_id: IdArgument, db: DbOption = None) -> None:
    """Pause every pending, running and waiting run."""
    _act(campaign_id, "pause", "campaign.pause", db)


@campaigns_app.command("resume")
def campaigns_resume(campaign_id: IdArgument, db: DbOption = None) -> None:
    """Resume every paused run."""
    _act(campaign_id, "resume", "campaign.resume", db)


@campaigns_app.command("cancel")
def campaigns_cancel(campaign_id: IdArgument, db: DbOption = None) -> None:
    """Cancel every unfinished run; the campaign stays cancelled."""
    _act(campaign_id, "cancel", "campaign.cancel", db)


@campaigns_app.command("retry-failed")
def campaigns_retry_failed(campaign_id: IdArgument, db: DbOption = None) -> None:
    """Retry every failed and timed-out run from its failed step."""
    _act(campaign_id, "retry-failed", "campaign.retry_failed", db)
