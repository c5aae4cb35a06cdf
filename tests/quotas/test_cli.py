"""``flowyard quotas set|list|delete`` through the real console script."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import cli


def test_set_list_delete(workdir: Path, db: str) -> None:
    made = cli(
        workdir, "quotas", "set", "credential:crm", "100 per 20s", "--burst", "5", "--db", db
    )
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout)
    assert (shown["key"], shown["rate"], shown["burst"]) == ("credential:crm", "100 per 20s", 5)
    assert shown["available"] == 5.0

    listed = cli(workdir, "quotas", "list", "--db", db)
    assert listed.returncode == 0 and "credential:crm" in listed.stdout
    assert "100 per 20s" in listed.stdout

    bad = cli(workdir, "quotas", "set", "credential:crm", "lots", "--db", db)
    assert bad.returncode != 0 and "/rate" in bad.stderr

    gone = cli(workdir, "quotas", "delete", "credential:crm", "--db", db)
    assert gone.returncode == 0, gone.stderr
    again = cli(workdir, "quotas", "delete", "credential:crm", "--db", db)
    assert again.returncode != 0 and "not found" in again.stderr
