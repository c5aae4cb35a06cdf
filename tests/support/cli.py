"""Run the real ``flowyard`` console script in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FLOWYARD = Path(sys.executable).parent / "flowyard"


def cli(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script; no colours, no environment-provided database."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWYARD_") or k in ("FLOWYARD_SECRET_KEY", "FLOWYARD_EGRESS_ALLOW")
    }
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [str(FLOWYARD), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        input=stdin,
        timeout=120,
        check=False,
    )
