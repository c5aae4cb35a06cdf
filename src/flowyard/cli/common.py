"""What every ``flowyard`` command shares: consoles, the --db option, settings, error
reporting (``error: ...`` and an exit code) and building a container for one command."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar, assert_never

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from flowyard.bootstrap import Container, build
from flowyard.domain import jsonvalue
from flowyard.domain.errors import FlowyardError, InvalidInput, Problem
from flowyard.nodes.registry import OWN_DISTRIBUTION, NodeRegistry, PluginStatus
from flowyard.settings import Settings, data_dir, display_url

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database: a sqlite:///path, a file path or a postgresql:// URL",
        show_default=f"FLOWYARD_DB, FLOWYARD_DB_URL, else {data_dir() / 'flowyard.db'}",
    ),
]


def settings_for(db: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given (a bad setting: one
    line and exit 2)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if db is not None:
        values["db_url"] = db
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        if not where.upper().startswith("FLOWYARD_"):
            where = f"{where} (FLOWYARD_{where.upper()})"
        fail(f"invalid setting {where}: {first['msg']}", code=2)


def announce_database(settings: Settings) -> None:
    """Say on stderr which database this command uses (never its password), and warn when
    a ``./flowyard.db`` left by an older flowyard sits where the command runs."""
    err.print(
        f"flowyard: database {display_url(settings.db_url)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    legacy = Path("flowyard.db")
    if "db_url" not in settings.model_fields_set and legacy.is_file():
        err.print(
            f"flowyard: note: {legacy.resolve()} is not used (the default database now lives "
            f"in {data_dir()}); pass --db {legacy} or set FLOWYARD_DB to use it",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def retry_hint(run_id: str, db: str | None) -> str:
    """The command that retries a run, with ``--db`` as given but without its password."""
    return f"flowyard runs retry {run_id} --wait" + (f" --db {display_url(db)}" if db else "")


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
    """Run a coroutine; flowyard errors (a database that cannot be opened, a lost master
    key, a refused input...) print one line and exit 2 (invalid input) or 1 (anything else);
    Ctrl-C exits 130."""
    try:
        return asyncio.run(coro_fn())
    except InvalidInput as exc:
        fail(exc.message, exc.problems, code=2)
    except FlowyardError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        raise typer.Exit(130) from None


async def open_container(settings: Settings, *, check_keys: bool = True) -> Container:
    """Say which database is used, then build a container on it."""
    announce_database(settings)
    container = await build(settings, check_keys=check_keys)
    announce_plugins(container.registry)
    return container


def announce_plugins(registry: NodeRegistry) -> None:
    """Say on stderr, one line each, which third-party node packs loaded (and their types)
    and which are installed but disabled. A pack that failed is not repeated here: the
    registry logged its one line (a warning, whatever command runs) when it was skipped."""
    for plugin in registry.plugins():
        match plugin.status:
            case PluginStatus.LOADED if plugin.distribution != OWN_DISTRIBUTION:
                line = f"node pack {plugin.label()} loaded: {', '.join(plugin.types)}"
            case PluginStatus.DISABLED:
                line = (
                    f"node pack {plugin.label()} is installed but not loaded "
                    "(FLOWYARD_LOAD_PLUGINS is false)"
                )
            case PluginStatus.LOADED | PluginStatus.FAILED:
                continue
            case _ as unreachable:
                assert_never(unreachable)
        err.print(f"flowyard: {line}", highlight=False, markup=False, soft_wrap=True)


def with_container(
    db: str | None, fn: Callable[[Container], Awaitable[T]], *, check_keys: bool = True
) -> T:
    """Build a container on ``db``, run ``fn`` with it and close it (errors as in
    :func:`run_async`)."""
    settings = settings_for(db)

    async def main() -> T:
        container = await open_container(settings, check_keys=check_keys)
        try:
            return await fn(container)
        finally:
            await container.close()

    return run_async(main)


def read_json(path: Path) -> Any:
    """Parse a JSON file (``-``: stdin) strictly (:func:`flowyard.domain.jsonvalue.loads`);
    exit 2 with where it is broken."""
    try:
        # Bytes: JSON text is UTF-8 (or -16/-32, detected), whatever the locale says.
        data = path.read_bytes() if str(path) != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", code=2)
    try:
        return jsonvalue.loads(data)
    except UnicodeDecodeError as exc:
        fail(f"{path} is not UTF-8 text: byte {exc.start} is {exc.object[exc.start]:#04x}", code=2)
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
    cause = detail.cause
    return {
        "run_id": run.id,
        "status": run.status.value,
        "correlation_key": run.correlation_key,
        "parent_run_id": run.parent_run_id,
        "output": run.output,
        "error": run.error,
        # The step whose error explains a failure (the caught call behind a fail node).
        "cause": None
        if cause is None
        else {"node_id": cause.node_id, "attempt": cause.attempt, "error": cause.error},
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
