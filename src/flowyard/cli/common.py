"""What every ``flowyard`` command shares: consoles, the --db option, settings, error
reporting (``error: ...`` and an exit code) and building a container for one command."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from flowyard.bootstrap import Container, build
from flowyard.domain import jsonvalue
from flowyard.domain.errors import FlowyardError, InvalidInput, Problem
from flowyard.settings import Settings

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: FLOWYARD_DB_URL or sqlite:///./flowyard.db)"),
]


def settings_for(db: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if db is not None:
        values["db_url"] = db
    return Settings(**values)


def cli_actor() -> str:
    """Who acts from the command line, as recorded in run events: ``cli:<os user>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"cli:{user}"


def fail(message: str, problems: list[Problem] | None = None, code: int = 1) -> NoReturn:
    """Print ``error: message`` (and each problem) to stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    for p in problems or []:
        err.print(
            f"  {p.pointer or '/'}: {p.message}", highlight=False, markup=False, soft_wrap=True
        )
    raise typer.Exit(code)


def run_async(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; flowyard errors exit 2 (invalid input) or 1 (anything else)."""
    try:
        return asyncio.run(coro_fn())
    except InvalidInput as exc:
        fail(exc.message, exc.problems, code=2)
    except FlowyardError as exc:
        fail(exc.message)


def with_container(db: str | None, fn: Callable[[Container], Awaitable[T]]) -> T:
    """Build a container on ``db``, run ``fn`` with it and close it (errors as in
    :func:`run_async`)."""

    async def main() -> T:
        container = await build(settings_for(db))
        try:
            return await fn(container)
        finally:
            await container.close()

    return run_async(main)


def read_json(path: Path) -> Any:
    """Parse a JSON file (``-``: stdin) strictly (:func:`flowyard.domain.jsonvalue.loads`);
    exit 2 with where it is broken."""
    try:
        text = path.read_text() if str(path) != "-" else sys.stdin.read()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", code=2)
    try:
        return jsonvalue.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", code=2)
    except jsonvalue.JsonValueError as exc:
        fail(f"{path} is not acceptable JSON: {exc}", code=2)


def parse_json_option(value: str | None, name: str) -> Any:
    """An option holding JSON, or ``@file``, parsed strictly; exit 2 when it is not JSON."""
    if value is None:
        return None
    if value.startswith("@"):
        return read_json(Path(value[1:]))
    try:
        return jsonvalue.loads(value)
    except json.JSONDecodeError as exc:
        fail(f"{name} is not valid JSON: {exc.msg} at column {exc.colno}", code=2)
    except jsonvalue.JsonValueError as exc:
        fail(f"{name} is not acceptable JSON: {exc}", code=2)


async def run_json(container: Container, run_id: str) -> dict[str, Any]:
    """A run with its steps and events, as printed by ``run`` and ``runs show``."""
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
        "events": [
            {"id": e.id, "type": e.type, "data": e.data, "actor": e.actor} for e in detail.events
        ],
    }
