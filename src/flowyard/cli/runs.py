"""``flowyard runs ...``: inspect runs, and act on them (cancel, pause, resume, retry, retry
the dead letters). Actions are recorded in the run's events as ``cli:<os user>``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from flowyard.bootstrap import Container
from flowyard.cli.common import (
    DbOption,
    cli_actor,
    err,
    fail,
    out,
    parse_json_option,
    retry_hint,
    run_json,
    with_container,
)
from flowyard.cli.progress import StepReporter, print_summary, wait_for
from flowyard.domain.records import RunRecord
from flowyard.domain.statuses import RunStatus
from flowyard.service import BulkRetry, RunDetail

runs_app = typer.Typer(help="Inspect runs and act on them.", no_args_is_help=True)

RunIdArg = Annotated[str, typer.Argument(help="Run id")]
ErrorTypeOption = Annotated[
    str | None,
    typer.Option(
        "--error-type", help="Error type that ended the run: exact (http.400) or prefix (http.*)"
    ),
]


class EndedStatus(StrEnum):
    """Statuses of runs that can be retried."""

    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@runs_app.command("list")
def runs_list(
    db: DbOption = None,
    status: Annotated[RunStatus | None, typer.Option(help="Filter by status")] = None,
    workflow: Annotated[str | None, typer.Option(help="Workflow id or name")] = None,
    error_type: ErrorTypeOption = None,
    correlation_key: Annotated[
        str | None, typer.Option(help="Only runs with this correlation key")
    ] = None,
    parent_run_id: Annotated[
        str | None, typer.Option("--parent", help="Only the child runs of this run")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """List runs, newest first, with their workflow's name."""

    async def main(container: Container) -> tuple[list[RunRecord], dict[str, str]]:
        found = await container.service.list_runs(
            status=status,
            workflow=workflow,
            error_type=error_type,
            correlation_key=correlation_key,
            parent_run_id=parent_run_id,
            limit=limit,
        )
        names: dict[str, str] = {}
        for workflow_id in {r.workflow_id for r in found}:
            names[workflow_id] = (await container.service.get_workflow(workflow_id)).name
        return found, names

    runs, names = with_container(db, main)
    if as_json:
        out.print_json(
            data=[
                {
                    "id": r.id,
                    "workflow": names[r.workflow_id],
                    "workflow_id": r.workflow_id,
                    "status": r.status.value,
                    "error_type": r.error_type,
                    "correlation_key": r.correlation_key,
                    "parent_run_id": r.parent_run_id,
                    "created_at": r.created_at.isoformat(),
                }
                for r in runs
            ]
        )
        return
    if not runs:
        err.print("no runs match", highlight=False)
        return
    # Ids are what users copy into ``runs show``: never truncate or wrap them.
    table = Table(
        Column("run", no_wrap=True, min_width=30),
        Column("workflow", no_wrap=True),
        "version",
        "status",
        "error",
        "created",
    )
    for r in runs:
        table.add_row(
            r.id,
            names[r.workflow_id],
            str(r.workflow_version),
            r.status.value,
            r.error_type or "",
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    # Piped output has no width to fit: do not squeeze the table into 80 columns.
    (out if out.is_terminal else Console(width=160)).print(table)


@runs_app.command("show")
def runs_show(run_id: RunIdArg, db: DbOption = None) -> None:
    """Show a run with its steps and events (JSON)."""
    out.print_json(data=with_container(db, lambda c: run_json(c, run_id)))


def _report(run: RunRecord, verb: str) -> None:
    out.print(f"run {run.id} {verb}: {run.status.value}", highlight=False)


@runs_app.command("cancel")
def runs_cancel(
    run_id: RunIdArg,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the run's history)")] = None,
    db: DbOption = None,
) -> None:
    """Cancel an unfinished run; a step still running is stopped. Exit 1 if it ended."""
    run = with_container(
        db, lambda c: c.service.cancel_run(run_id, actor=cli_actor(), reason=reason)
    )
    _report(run, "cancelled")


@runs_app.command("pause")
def runs_pause(run_id: RunIdArg, db: DbOption = None) -> None:
    """Pause a run: no new step starts until it is resumed. Exit 1 if it cannot be paused."""
    _report(with_container(db, lambda c: c.service.pause_run(run_id, actor=cli_actor())), "paused")


@runs_app.command("resume")
def runs_resume(run_id: RunIdArg, db: DbOption = None) -> None:
    """Resume a paused run. Exit 1 if it is not paused."""
    run = with_container(db, lambda c: c.service.resume_run(run_id, actor=cli_actor()))
    _report(run, "resumed")


@runs_app.command("signal")
def runs_signal(
    name: Annotated[str, typer.Argument(help="The signal's name")],
    run_id: Annotated[str | None, typer.Option("--run", help="The run's id")] = None,
    workflow: Annotated[
        str | None, typer.Option(help="With --key: the run's workflow (id or name)")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="The run's correlation key (with --workflow)")
    ] = None,
    data: Annotated[str | None, typer.Option(help="The payload: JSON, or @file")] = None,
    db: DbOption = None,
) -> None:
    """Send a signal to a run, by id (--run) or by its workflow and correlation key (a reply
    that knows a customer, not a run). A step waiting for it wakes; otherwise the run keeps it
    until it waits. Exit 1 if the run is finished or not found."""
    if (run_id is None) == (key is None) or (key is not None) != (workflow is not None):
        fail("give --run RUN_ID, or --workflow WORKFLOW and --key KEY", code=2)
    payload = parse_json_option(data, "--data")
    actor = cli_actor()
    if run_id is not None:
        rid = run_id
        signal, woke = with_container(
            db, lambda c: c.service.send_signal(rid, name, payload, actor=actor)
        )
    else:
        assert workflow is not None and key is not None
        ref, k = workflow, key
        signal, woke = with_container(
            db, lambda c: c.service.signal_by_correlation(ref, k, name, payload, actor=actor)
        )
    state = "a waiting step woke" if woke else "kept until the run waits for it"
    out.print(f"signal {name} sent to run {signal.run_id}: {state}", highlight=False, markup=False)


@runs_app.command("retry")
def runs_retry(
    run_id: RunIdArg,
    db: DbOption = None,
    wait: Annotated[
        bool,
        typer.Option("--wait/--no-wait", help="Execute it here, showing each step, until it ends"),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 300.0,
) -> None:
    """Retry a failed, timed-out or cancelled run from its failed step.

    The steps that succeeded keep their outputs. A run that failed in a ``fail`` node reached
    through a ``catch`` route restarts from the caught step (its error branch runs again
    only if that step fails again). Exit 1 for a run in another status, or with --wait when
    the retried run does not succeed.
    """
    reporter = StepReporter(out) if wait else None

    async def retry(container: Container) -> RunDetail:
        run = await container.service.retry_run(run_id, actor=cli_actor())
        _report(run, "retried")
        if wait:
            await wait_for(container, run.id, timeout, reporter)
        return await container.service.get_run(run.id)

    detail = with_container(db, retry)
    if wait:
        print_summary(out, detail, retry_hint(run_id, db))
        if detail.run.status != RunStatus.SUCCEEDED:
            raise typer.Exit(1)


@runs_app.command("retry-failed")
def runs_retry_failed(
    db: DbOption = None,
    workflow: Annotated[str | None, typer.Option(help="Workflow id or name")] = None,
    error_type: ErrorTypeOption = None,
    status: Annotated[
        EndedStatus, typer.Option(help="Status of the runs to retry")
    ] = EndedStatus.FAILED,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many runs")] = 100,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """Retry ended runs by filter (the dead-letter queue), newest first.

    Without --yes, say how many runs match and ask first.
    """
    run_status = RunStatus(status.value)
    if not yes:

        async def count(container: Container) -> int:
            matched = await container.service.list_runs(
                status=run_status, workflow=workflow, error_type=error_type, limit=limit
            )
            return len(matched)

        matched = with_container(db, count)
        out.print(f"{matched} {status.value} run(s) would be retried", highlight=False)
        if matched == 0:
            return
        try:
            confirmed = typer.confirm("Retry them?", default=False)
        except typer.Abort:  # end of input: treated as no
            confirmed = False
        if not confirmed:
            err.print("nothing retried", highlight=False)
            return

    result: BulkRetry = with_container(
        db,
        lambda c: c.service.retry_failed(
            workflow=workflow,
            error_type=error_type,
            status=run_status,
            limit=limit,
            actor=cli_actor(),
        ),
    )
    _print_bulk(result, as_json)


def _print_bulk(result: BulkRetry, as_json: bool) -> None:
    data: dict[str, Any] = {
        "matched": result.matched,
        "retried": result.retried,
        "skipped": result.skipped,
    }
    if as_json:
        out.print_json(data=data)
        return
    out.print(f"retried {len(result.retried)} of {result.matched} run(s)", highlight=False)
    for run_id in result.retried:
        out.print(f"  {run_id}", highlight=False)
    for skipped in result.skipped:
        out.print(f"  skipped {skipped['run_id']}: {skipped['reason']}", highlight=False)
