"""Run the real ``flowyard`` console script in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

FLOWYARD = Path(sys.executable).parent / "flowyard"
#: Settings of the test session that the subprocesses keep (the master key; the egress
#: allow-list of the loopback fakes, ``FLOWYARD_EGRESS_*``).
_PASSED = frozenset({"FLOWYARD_SECRET_KEY"})


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
    stdin: str | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the console script (see :func:`cli_env` for its environment)."""
    return subprocess.run(
        [str(FLOWYARD), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(cwd, env),
        input=stdin,
        timeout=timeout,
        check=False,
    )


def messages(result: subprocess.CompletedProcess[str]) -> str:
    """stderr without the ``flowyard: ...`` lines every command starts with (which database
    it uses), so an error is its first line."""
    lines = result.stderr.splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("flowyard: "))
