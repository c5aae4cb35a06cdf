"""``flowyard prune``: delete finished runs past their retention (or older than
``--older-than``), by small batches, directly on the database (decision 0031)."""

from __future__ import annotations

from typing import Annotated

import typer

from flowyard.bootstrap import Container
from flowyard.cli.common import DbOption, cli_actor, out, with_container
from flowyard.domain.auth import AuditEntry
from flowyard.domain.retention import PruneReport
from flowyard.service.retention import Policy, parse_age


def _summary(report: PruneReport) -> str:
    c = report.counts
    verb = "would prune" if report.dry_run else "pruned"
    return (
        f"{verb} {c['runs']:,} runs ({c['steps']:,} steps, {c['run_events']:,} events, "
        f"{c['signals']:,} signals, {c['branches']:,} branches)"
    )


def _leftovers(report: PruneReport) -> str:
    c = report.leftovers
    verb = "would delete" if report.dry_run else "deleted"
    return (
        f"{verb} rows whose owner is gone: {c['quotas']:,} quota rows of ended campaigns, "
        f"{c['trigger_throttles']:,} throttle windows, {c['trigger_debounces']:,} "
        "debounced starts"
    )


def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Delete finished runs that finished longer ago than this (30d, 12h, P90D), "
            "whatever their workflow's retention says; without it each workflow's "
            "retention applies (else FLOWYARD_RETENTION)",
            show_default=False,
        ),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option(help="Only this workflow's runs (id or name)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing")
    ] = False,
    db: DbOption = None,
) -> None:
    """Delete finished runs (succeeded, failed, cancelled, timed out) past their retention,
    with their steps, events, signals and child runs, in small transactions that never
    wait for a worker. Unfinished runs are never deleted, however old."""

    async def main(container: Container) -> tuple[PruneReport, dict[str, Policy]]:
        service = container.retention
        # The policies first: an unknown workflow or a bad --older-than fails before
        # anything is deleted, and a prune with no policy to apply says so.
        policies = await service.policies(
            workflow=workflow,
            older_than_s=None if older_than is None else parse_age(older_than),
        )
        applied = {p.workflow: p for p in policies if p.keep_s is not None}
        audit = AuditEntry("retention.prune", cli_actor(), "workflow", workflow, "cli")
        report = await service.prune(
            older_than=older_than,
            workflow=workflow,
            dry_run=dry_run,
            audit=audit if (applied or workflow is None) and not dry_run else None,
        )
        return report, applied

    report, applied = with_container(db, main, check_keys=False)
    if not applied:
        out.print(
            "nothing to prune: the runs in scope are kept forever (their workflow's "
            "retention, else FLOWYARD_RETENTION); give --older-than",
            highlight=False,
        )
        if workflow is None:
            out.print(_leftovers(report), highlight=False)
        return
    out.print(_summary(report), highlight=False)
    for name, n in sorted(report.runs_by_workflow.items()):
        policy = applied[name]
        out.print(
            f"  {name}: {n:,} runs (older than {policy.shown}: {policy.source})",
            highlight=False,
            markup=False,
        )
    if report.skipped:
        out.print(
            f"  {report.skipped:,} runs left for later (a step or a child run still in flight, "
            "or held by another transaction)",
            highlight=False,
        )
    if workflow is None:
        out.print(_leftovers(report), highlight=False)
