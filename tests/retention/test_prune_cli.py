"""``flowyard prune`` on SQLite and PostgreSQL: a dry run counts and deletes nothing, a real
prune deletes and says what, ``--workflow`` narrows it, the policies apply without
``--older-than``, and bad input is one line and a non-zero exit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowyard.settings import Settings
from retention.test_retention_service import existing, flow, settle, start
from support.cli import cli
from support.clock import FakeClock
from support.harness import built, working


async def test_prune_from_the_command_line(settings: Settings, db_url: str, tmp_path: Path) -> None:
    # Runs that finished two days ago (the CLI prunes on the real clock).
    clock = FakeClock(datetime.now(UTC) - timedelta(days=2))
    async with built(settings, clock, pruner=False) as container:
        mine = await start(container, flow("mine"), 2)
        theirs = await start(container, flow("theirs", retention="3d"), 1)
        async with working(container):
            await settle(container, mine + theirs)

    nothing = cli(tmp_path, "prune", "--workflow", "mine", "--db", db_url)
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.startswith("nothing to prune: ")  # no retention, global forever
    kept = cli(tmp_path, "prune", "--db", db_url)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("pruned 0 runs (0 steps, ")  # theirs keeps 3 days

    dry = cli(tmp_path, "prune", "--older-than", "1d", "--dry-run", "--db", db_url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0].startswith("would prune 3 runs (6 steps, ")
    assert "  mine: 2 runs (older than 1d: --older-than)" in dry.stdout
    assert "  theirs: 1 runs (older than 1d: --older-than)" in dry.stdout

    real = cli(tmp_path, "prune", "--older-than", "1d", "--workflow", "mine", "--db", db_url)
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines()[0].startswith("pruned 2 runs (4 steps, ")

    by_policy = cli(
        tmp_path, "prune", "--dry-run", "--db", db_url, env={"FLOWYARD_RETENTION": "1h"}
    )
    assert by_policy.returncode == 0, by_policy.stderr
    assert "  theirs" not in by_policy.stdout  # its own 3d wins over the global 1h
    by_policy = cli(tmp_path, "prune", "--db", db_url, env={"FLOWYARD_RETENTION": "1h"})
    assert by_policy.returncode == 0 and "pruned 0 runs" in by_policy.stdout

    async with built(settings, clock, pruner=False) as container:
        assert await existing(container, mine + theirs) == set(theirs)
        entries = await container.store.list_audit(action="retention.prune")
        # Newest first: each prune that had a policy to apply (not the dry run).
        assert [(e.detail or {})["deleted"]["runs"] for e in entries] == [0, 2, 0]
        assert entries[1].actor.startswith("cli:") and entries[1].target_id == "mine"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bad_input_is_one_line_and_a_non_zero_exit(db_url: str, tmp_path: Path) -> None:
    for args, env, code, message in [
        (["--older-than", "soon"], {}, 2, "error: invalid --older-than: 'soon' is not a duration"),
        (["--older-than", "forever"], {}, 2, "error: invalid --older-than: an age like 30d"),
        (["--workflow", "nope"], {}, 1, "error: workflow 'nope' not found"),
        ([], {"FLOWYARD_RETENTION": "a month"}, 2, "error: invalid FLOWYARD_RETENTION: "),
    ]:
        bad = cli(tmp_path, "prune", *args, "--db", db_url, env=env)
        lines = [line for line in bad.stderr.splitlines() if not line.startswith("flowyard: ")]
        assert bad.returncode == code, bad.stderr
        assert len(lines) == 1 and lines[0].startswith(message), bad.stderr
