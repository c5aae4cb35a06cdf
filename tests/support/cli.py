"""Run the ``flowyard`` command line: in this process (:func:`cli`, the default: the typer app
the console script calls, with the environment, working directory and stdin a subprocess would
get) or as the real console script in a subprocess (:func:`cli_subprocess`).

Starting a subprocess costs a Python start and the whole import of flowyard (1-5 s on a busy
2-core machine), several times per test: the CLI suites spent most of their time there. What a
test of the CLI checks (output, exit codes, files written) does not depend on it; the entry
point itself and the commands that run until signalled keep real subprocesses: ``serve`` and
``worker`` (not their ``--help``) always go to one, and a few smoke tests call
:func:`cli_subprocess` directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path

FLOWYARD = Path(sys.executable).parent / "flowyard"
#: Settings of the test session that the subprocesses keep (the master key; the egress
#: allow-list of the loopback fakes, ``FLOWYARD_EGRESS_*``).
_PASSED = frozenset({"FLOWYARD_SECRET_KEY"})
#: Commands that serve until signalled: in-process they could only be stopped by the test's
#: timeout, and they install signal handlers; a subprocess keeps ``timeout`` meaningful.
_LONG_RUNNING = frozenset({"serve", "worker"})
#: One in-process invocation at a time (it swaps the process's environment, cwd and streams).
_LOCK = threading.Lock()


def cli_env(cwd: Path, env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a subprocess: no colours, no environment-provided database, and a
    data directory of its own under ``cwd`` (never the real home directory). ``env`` adds
    variables (None removes one, e.g. ``FLOWYARD_SECRET_KEY`` for key-file mode)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWYARD_") or k in _PASSED or k.startswith("FLOWYARD_EGRESS_")
    }
    base.pop("FORCE_COLOR", None)
    base["NO_COLOR"] = "1"
    base["XDG_DATA_HOME"] = str(cwd / ".data")
    for key, value in (env or {}).items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def cli(
    cwd: Path,
    *args: str,
    stdin: str | bytes | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a ``flowyard`` command in this process, as the console script would run it in
    ``cwd`` with :func:`cli_env`'s environment and ``stdin``: its stdout, stderr (with the
    traceback of an uncaught exception, as Python prints it) and exit code. ``serve`` and
    ``worker`` run in a subprocess (:func:`cli_subprocess`), within ``timeout``."""
    if (_LONG_RUNNING.intersection(args[:1]) and "--help" not in args) or _colouring():
        return cli_subprocess(cwd, *args, stdin=stdin, env=env, timeout=timeout)
    if not _in_event_loop():
        return _invoke(cwd, args, stdin, env)
    # Called from a coroutine: the command runs its own event loop (asyncio.run), so it gets a
    # thread; this one blocks until it is done, as it would on a subprocess.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_invoke, cwd, args, stdin, env).result()


def _colouring() -> bool:
    """True when the CLI's consoles were made colouring (the CLI was imported with a terminal
    on stdout, ``pytest -s``, or with FORCE_COLOR): their output would hold escape codes that a
    subprocess, on pipes and without FORCE_COLOR, does not write."""
    from flowyard.cli.common import err, out

    return out.color_system is not None or err.color_system is not None


def _positive(value: str | None, default: int) -> int:
    return int(value) if value and value.isdigit() and int(value) > 0 else default


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _invoke(
    cwd: Path,
    args: tuple[str, ...],
    stdin: str | bytes | None,
    env: Mapping[str, str | None] | None,
) -> subprocess.CompletedProcess[str]:
    from typer.testing import CliRunner

    from flowyard.cli.common import err, out
    from flowyard.cli.main import app

    wanted = cli_env(cwd, env)
    # CliRunner applies changes to os.environ (None: unset) and undoes them afterwards.
    changes: dict[str, str | None] = {k: None for k in os.environ if k not in wanted}
    changes.update({k: v for k, v in wanted.items() if os.environ.get(k) != v})
    # The module-level consoles were made once, when the test process imported the CLI (with
    # the environment of that moment: pytest-xdist's workers have COLUMNS=80 and LINES=24): give
    # them the size a subprocess's consoles would take from this environment (no terminal).
    size = (_positive(wanted.get("COLUMNS"), 80), _positive(wanted.get("LINES"), 25))
    with _LOCK, _fresh_logging(), _in_directory(cwd):
        for console in (out, err):
            console.size = size
        runner = CliRunner()
        result = runner.invoke(app, list(args), input=stdin, env=changes, prog_name="flowyard")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What the interpreter prints for an exception that escapes the console script.
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(
        [str(FLOWYARD), *args], result.exit_code, result.stdout, stderr
    )


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    """Logging as a fresh interpreter has it (no handlers, so the command's own
    ``logging.basicConfig`` installs its stderr handler), restored afterwards."""
    root, ours = logging.getLogger(), logging.getLogger("flowyard")
    handlers, level, our_level = root.handlers[:], root.level, ours.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    ours.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        ours.setLevel(our_level)


@contextlib.contextmanager
def _in_directory(path: Path) -> Iterator[None]:
    """``os.chdir`` for the duration (a subprocess's ``cwd``)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def cli_subprocess(
    cwd: Path,
    *args: str,
    stdin: str | bytes | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the console script in a subprocess (see :func:`cli_env` for its environment)."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run(
        [str(FLOWYARD), *args],
        capture_output=True,
        cwd=cwd,
        env=cli_env(cwd, env),
        input=data,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


def messages(result: subprocess.CompletedProcess[str]) -> str:
    """stderr without the ``flowyard: ...`` lines every command starts with (which database
    it uses), so an error is its first line."""
    lines = result.stderr.splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("flowyard: "))
