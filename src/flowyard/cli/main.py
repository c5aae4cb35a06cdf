"""``flowyard``: serve, worker, db upgrade, validate, run, runs list|show."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from flowyard.bootstrap import Container, build
from flowyard.domain.errors import FlowyardError, InvalidInput, Problem
from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings

T = TypeVar("T")
app = typer.Typer(help="flowyard: durable workflow automation engine.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")

out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: FLOWYARD_DB_URL or sqlite:///./flowyard.db)"),
]


def _settings(db: str | None = None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if db is not None:
        values["db_url"] = db
    return Settings(**values)


def _fail(message: str, problems: list[Problem] | None = None, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    for p in problems or []:
        err.print(
            f"  {p.pointer or '/'}: {p.message}", highlight=False, markup=False, soft_wrap=True
        )
    raise typer.Exit(code)


def _run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(coro_fn())
    except InvalidInput as exc:
        _fail(exc.message, exc.problems, code=2)
    except FlowyardError as exc:
        _fail(exc.message)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text() if str(path) != "-" else sys.stdin.read()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}", code=2)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", code=2
        )


def _parse_json_option(value: str | None, name: str) -> Any:
    if value is None:
        return None
    if value.startswith("@"):
        return _read_json(Path(value[1:]))
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        _fail(f"{name} is not valid JSON: {exc.msg} at column {exc.colno}", code=2)


@app.callback()
def _main(log_level: Annotated[str, typer.Option(help="Logging level")] = "WARNING") -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
    workers: Annotated[int | None, typer.Option(help="In-process workers (0: API only)")] = None,
    load_samples: Annotated[
        bool, typer.Option("--load-samples/--no-load-samples", help="Load examples/*.json")
    ] = False,
    samples_dir: Annotated[str | None, typer.Option(help="Where the samples are")] = None,
) -> None:
    """Serve the API with in-process workers."""
    import uvicorn

    from flowyard.api import create_app

    settings = _settings(
        db,
        host=host,
        port=port,
        workers=workers,
        load_samples=load_samples or None,
        samples_dir=samples_dir,
    )
    logging.getLogger("flowyard").setLevel(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def worker(
    db: DbOption = None,
    concurrency: Annotated[int | None, typer.Option(help="Concurrent steps")] = None,
    processes: Annotated[int, typer.Option(help="Worker loops in this process")] = 1,
) -> None:
    """Run standalone workers against a shared database until SIGTERM/SIGINT."""
    settings = _settings(db, concurrency=concurrency)
    logging.getLogger("flowyard").setLevel(settings.log_level)

    async def main() -> None:
        container = await build(settings)
        workers = [container.new_worker() for _ in range(max(1, processes))]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop_all, workers)
        err.print(f"flowyard worker: {len(workers)} loop(s) on {container.store.dialect}")
        try:
            await asyncio.gather(*(w.run() for w in workers))
        finally:
            await container.close()

    _run(main)


def _stop_all(workers: list[Any]) -> None:
    for w in workers:
        w.stop()


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply pending migrations."""

    async def main() -> None:
        container = await build(_settings(db))
        await container.close()

    _run(main)
    out.print("database is up to date")


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Definition JSON ('-' for stdin)")]) -> None:
    """Validate a definition: every problem with its JSON pointer; exit 1 if any."""

    async def main() -> list[Problem]:
        container = await build(_settings("sqlite:///:memory:"), migrate=False)
        try:
            return container.validator.validate(_read_json(file)).problems
        finally:
            await container.close()

    problems = _run(main)
    if problems:
        _fail(f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", problems)
    out.print(f"{file}: valid")


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file")
    ] = None,
) -> None:
    """Print the JSON Schema of the workflow definition format."""
    from flowyard.domain.definition import definition_json_schema

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
        bool, typer.Option("--wait/--no-wait", help="Execute here and print the result")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 300.0,
    db: DbOption = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency key")] = None,
) -> None:
    """Save the definition (new version if changed), start a run, and with --wait execute it
    with an embedded worker and print the result."""
    run_input = _parse_json_option(input, "--input") if input is not None else {}
    run_vars = _parse_json_option(vars, "--vars")
    if run_vars is not None and not isinstance(run_vars, dict):
        _fail("--vars must be a JSON object", code=2)

    async def main() -> dict[str, Any]:
        container = await build(_settings(db))
        try:
            if file.exists() or str(file) == "-":
                record, _, _ = await container.service.save_workflow(_read_json(file), "cli")
                ref: str = record.id
            else:
                ref = str(file)
            run_record, _ = await container.service.start_run(
                ref, run_input, vars=run_vars, idempotency_key=idempotency_key, actor="cli"
            )
            if wait:
                await _wait_for(container, run_record.id, timeout)
            return await _run_json(container, run_record.id)
        finally:
            await container.close()

    result = _run(main)
    out.print_json(data=result)
    if wait and result["status"] != RunStatus.SUCCEEDED:
        raise typer.Exit(1)


async def _wait_for(container: Container, run_id: str, timeout: float) -> None:
    worker = container.new_worker()
    done = False

    async def check() -> None:
        nonlocal done
        while not done:
            done = (await container.store.get_run(run_id)).status.is_terminal
            if not done:
                await asyncio.sleep(0.05)

    checker = asyncio.create_task(check())
    try:
        await worker.run_until(lambda: done, timeout_s=timeout)
    except TimeoutError:
        _fail(f"run {run_id} did not finish within {timeout:g} s (it stays in the database)")
    finally:
        checker.cancel()


async def _run_json(container: Container, run_id: str) -> dict[str, Any]:
    detail = await container.service.get_run(run_id)
    run = detail.run
    return {
        "run_id": run.id,
        "status": run.status.value,
        "output": run.output,
        "error": run.error,
        "steps": [
            {
                "node_id": s.node_id,
                "status": s.status.value,
                "attempt": s.attempt,
                "output": s.output,
                "error": s.error,
            }
            for s in detail.steps
        ],
        "events": [{"id": e.id, "type": e.type, "data": e.data} for e in detail.events],
    }


@runs_app.command("list")
def runs_list(
    db: DbOption = None,
    status: Annotated[RunStatus | None, typer.Option(help="Filter by status")] = None,
    workflow: Annotated[str | None, typer.Option(help="Workflow id or name")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """List runs, newest first."""

    async def main() -> list[Any]:
        container = await build(_settings(db))
        try:
            return await container.service.list_runs(status=status, workflow=workflow, limit=limit)
        finally:
            await container.close()

    runs = _run(main)
    if as_json:
        out.print_json(
            data=[
                {
                    "id": r.id,
                    "workflow_id": r.workflow_id,
                    "status": r.status.value,
                    "created_at": r.created_at.isoformat(),
                }
                for r in runs
            ]
        )
        return
    # Ids are what users copy into ``runs show``: never truncate or wrap them.
    table = Table(
        Column("run", no_wrap=True, min_width=30),
        Column("workflow", no_wrap=True, min_width=29),
        "version",
        "status",
        "created",
    )
    for r in runs:
        table.add_row(
            r.id,
            r.workflow_id,
            str(r.workflow_version),
            r.status.value,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    # Piped output has no width to fit: do not squeeze the table into 80 columns.
    (out if out.is_terminal else Console(width=160)).print(table)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="Run id")], db: DbOption = None) -> None:
    """Show a run with its steps and events (JSON)."""

    async def main() -> dict[str, Any]:
        container = await build(_settings(db))
        try:
            return await _run_json(container, run_id)
        finally:
            await container.close()

    out.print_json(data=_run(main))


def main() -> None:
    """Console entry point."""
    app()
