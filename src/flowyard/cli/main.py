"""``flowyard``: serve, worker, db upgrade, validate, schema, run; ``runs ...`` lives in
:mod:`flowyard.cli.runs`, ``prune`` in :mod:`flowyard.cli.retention`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer

from flowyard.bootstrap import Container
from flowyard.cli.campaigns import campaigns_app
from flowyard.cli.common import (
    DbOption,
    cli_actor,
    err,
    fail,
    open_container,
    out,
    parse_json_option,
    read_json,
    retry_hint,
    run_async,
    run_json,
    settings_for,
)
from flowyard.cli.credentials import credentials_app
from flowyard.cli.doctor import doctor
from flowyard.cli.drafts import draft_app
from flowyard.cli.hooks import hooks_app
from flowyard.cli.progress import StepReporter, print_summary, wait_for
from flowyard.cli.quotas import quotas_app
from flowyard.cli.retention import prune
from flowyard.cli.runs import runs_app
from flowyard.cli.schedules import schedules_app
from flowyard.cli.triggers import triggers_app
from flowyard.cli.users import keys_app, users_app
from flowyard.domain.errors import FlowyardError, Problem
from flowyard.domain.statuses import RunStatus
from flowyard.nodes.registry import NodeRegistry
from flowyard.service import RunDetail
from flowyard.settings import Settings

app = typer.Typer(help="flowyard: durable workflow automation engine.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="api-keys")
app.add_typer(credentials_app, name="credentials")
app.add_typer(quotas_app, name="quotas")
app.add_typer(hooks_app, name="hooks")
app.add_typer(triggers_app, name="triggers")
app.add_typer(draft_app, name="draft")
app.add_typer(schedules_app, name="schedules")
app.add_typer(campaigns_app, name="campaigns")
app.command()(doctor)
app.command("prune")(prune)


@app.callback()
def _main(log_level: Annotated[str, typer.Option(help="Logging level")] = "WARNING") -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _default(name: str) -> str:
    """A setting's default and its environment variable, for ``--help``."""
    field = Settings.model_fields[name]
    return f"{field.get_default(call_default_factory=True)}, or FLOWYARD_{name.upper()}"


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address", show_default=_default("host"))
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port", show_default=_default("port"))] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="In-process workers (0: API only)", show_default=_default("workers")),
    ] = None,
    load_samples: Annotated[
        bool,
        typer.Option(
            "--load-samples/--no-load-samples",
            help="Create the sample workflows that do not exist yet (never overwrites)",
            show_default="no, or FLOWYARD_LOAD_SAMPLES",
        ),
    ] = False,
    samples_dir: Annotated[
        str | None,
        typer.Option(help="Where the samples are", show_default=_default("samples_dir")),
    ] = None,
) -> None:
    """Serve the API with in-process workers. On an empty database the first start creates
    the user ``admin`` (FLOWYARD_ADMIN_PASSWORD, or a random password printed once).
    SIGTERM or Ctrl+C stops it within FLOWYARD_SHUTDOWN_GRACE_S."""
    from flowyard.api.app import StartupRefused, check_first_start
    from flowyard.api.server import serve as serve_api

    settings = settings_for(
        db,
        host=host,
        port=port,
        workers=workers,
        load_samples=load_samples or None,
        samples_dir=samples_dir,
    )
    logging.getLogger("flowyard").setLevel(settings.log_level)

    async def preflight() -> NodeRegistry:
        # Open, migrate and check the master key (and a first admin password) here, so that
        # a database that cannot be opened, a lost key file or a weak FLOWYARD_ADMIN_PASSWORD
        # is one line, not a traceback from the ASGI lifespan.
        container = await open_container(settings)
        try:
            await check_first_start(container)
        except StartupRefused as exc:
            fail(str(exc))
        finally:
            await container.close()
        # The app serves these node types: packs load (and report their failures) once.
        return container.registry

    registry = run_async(preflight)
    code = serve_api(settings, registry=registry)
    if code:
        raise typer.Exit(code)


@app.command()
def worker(
    db: DbOption = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Concurrent steps", show_default=_default("concurrency"))
    ] = None,
    processes: Annotated[int, typer.Option(help="Worker loops in this process")] = 1,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics on this port (FLOWYARD_METRICS_HOST; 0: any free)",
        ),
    ] = None,
) -> None:
    """Run standalone workers against a shared database until SIGTERM/SIGINT."""
    settings = settings_for(db, concurrency=concurrency)
    logging.getLogger("flowyard").setLevel(settings.log_level)

    async def main() -> None:
        container = await open_container(settings)
        # The first worker brings the process's scheduler and trigger dispatcher along.
        workers = [container.new_worker() for _ in range(max(1, processes))]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop_all, workers)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if metrics_port is not None:
                    await stack.enter_async_context(_serve_metrics(container, metrics_port))
                listener = await container.listen_for_work()
                if listener is not None:
                    stack.push_async_callback(listener.close)
                err.print(f"flowyard worker: {len(workers)} loop(s) on {container.admin.dialect}")
                await asyncio.gather(*(w.run() for w in workers))
        finally:
            await container.close()

    run_async(main)


@contextlib.asynccontextmanager
async def _serve_metrics(container: Container, port: int) -> AsyncIterator[None]:
    """Serve the container's metrics over HTTP (a daemon thread) and refresh the queue depth
    in the background, until the context ends."""
    from prometheus_client import start_http_server

    settings = container.settings
    # Fill the queue-depth gauge before the first scrape can arrive, so it is never missing.
    with contextlib.suppress(FlowyardError):
        await container.metrics.refresh_queue_depth(container.admin.queue_health, max_age_s=0)
    server, thread = start_http_server(
        port, addr=settings.metrics_host, registry=container.metrics.registry
    )
    refresher = asyncio.get_running_loop().create_task(
        container.metrics.refresh_queue_depth_forever(
            container.admin.queue_health, interval_s=settings.metrics_queue_depth_ttl_s
        ),
        name="metrics-queue-depth",
    )
    err.print(
        f"flowyard worker metrics: http://{settings.metrics_host}:{server.server_port}/metrics"
    )
    try:
        yield
    finally:
        refresher.cancel()
        await asyncio.wait([refresher])
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _stop_all(workers: list[Any]) -> None:
    for w in workers:
        w.stop()


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply pending migrations."""

    settings = settings_for(db)

    async def main() -> None:
        container = await open_container(settings)
        await container.close()

    run_async(main)
    out.print("database is up to date")


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Definition JSON ('-' for stdin)")],
    db: DbOption = None,
) -> None:
    """Validate a definition: every problem with its JSON pointer; exit 1 if any. The answer
    is the one saving it would get: credentials are looked up in the database."""
    raw = read_json(file)
    settings = settings_for(db)

    async def main() -> list[Problem]:
        container = await open_container(settings)
        try:
            # The service's one validation: what POST /workflows would refuse it for.
            return (await container.service.validate(raw)).problems
        finally:
            await container.close()

    problems = run_async(main)
    if problems:
        fail(f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", problems)
    out.print(f"{file}: valid")


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file")
    ] = None,
) -> None:
    """Print the JSON Schema of the workflow definition format."""
    from flowyard.domain.state_machine import definition_json_schema

    text = json.dumps(definition_json_schema(), indent=2, sort_keys=True) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Definition JSON, or an existing workflow name")],
    input: Annotated[str | None, typer.Option("--input", help="Run input JSON (or @file)")] = None,
    vars: Annotated[
        str | None, typer.Option("--vars", help="Vars JSON overriding the workflow's")
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait", help="Execute here, showing each step, and print the result"
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 300.0,
    db: DbOption = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency key")] = None,
    correlation_key: Annotated[
        str | None,
        typer.Option(help="The run's correlation key (else the definition computes one)"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run, its steps and events as JSON")
    ] = False,
) -> None:
    """Save the definition (new version if changed) and start a run. With --wait, execute it
    with an embedded worker, showing each step as it finishes, then the run's status and,
    if it failed, the step that caused it (exit 1)."""
    run_input = parse_json_option(input, "--input") if input is not None else {}
    run_vars = parse_json_option(vars, "--vars")
    if run_vars is not None and not isinstance(run_vars, dict):
        fail("--vars must be a JSON object", code=2)
    settings = settings_for(db)
    reporter = None if as_json else StepReporter(out)

    async def main() -> tuple[dict[str, Any], RunDetail]:
        container = await open_container(settings)
        try:
            if file.exists() or str(file) == "-":
                record, _, _ = await container.service.save_workflow(read_json(file), cli_actor())
                ref: str = record.id
            else:
                ref = str(file)
            run_record, _ = await container.service.start_run(
                ref,
                run_input,
                vars=run_vars,
                idempotency_key=idempotency_key,
                correlation_key=correlation_key,
                actor=cli_actor(),
            )
            if wait:
                if reporter is not None:
                    out.print(f"run {run_record.id} started", highlight=False)
                await wait_for(container, run_record.id, timeout, reporter)
            detail = await container.service.get_run(run_record.id)
            return await run_json(container, run_record.id), detail
        finally:
            await container.close()

    result, detail = run_async(main)
    if as_json:
        out.print_json(data=result)
    elif wait:
        print_summary(out, detail, retry_hint(detail.run.id, db))
    else:
        out.print(
            f"run {detail.run.id} {detail.run.status.value}: a worker executes it "
            "(flowyard serve or flowyard worker), or start it with --wait",
            highlight=False,
        )
    if wait and result["status"] != RunStatus.SUCCEEDED:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point."""
    app()
