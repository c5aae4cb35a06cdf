"""``flowyard triggers ...``: create, list, emit, disable, delete; bad input is one line on
stderr with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

from events.conftest import echo
from support.cli import cli


def test_triggers_from_the_command_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    definition = tmp_path / "shipping.json"
    definition.write_text(json.dumps(echo("shipping")))
    saved = cli(tmp_path, "run", str(definition), "--input", "{}", "--db", db)
    assert saved.returncode == 0, saved.stderr
    created = cli(
        tmp_path, "triggers", "create", "ship", "--workflow", "shipping", "--event", "order.placed",
        "--config", '{"filter": "event.payload.total > 1"}', "--db", db,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["on"] == "event order.placed"

    emitted = cli(
        tmp_path, "triggers", "emit", "order.placed", "--payload", '{"total": 5}', "--db", db
    )
    assert emitted.returncode == 0, emitted.stderr
    [outcome] = json.loads(emitted.stdout)
    assert outcome["outcome"] == "started" and outcome["run_id"]
    filtered = cli(
        tmp_path, "triggers", "emit", "order.placed", "--payload", '{"total": 0}', "--db", db
    )
    assert json.loads(filtered.stdout)[0]["outcome"] == "filtered"

    listed = cli(tmp_path, "triggers", "list", "--db", db, env={"COLUMNS": "250"})
    assert listed.returncode == 0 and "ship" in listed.stdout and "order.placed" in listed.stdout
    assert cli(tmp_path, "triggers", "disable", "ship", "--db", db).returncode == 0
    off = cli(tmp_path, "triggers", "emit", "order.placed", "--payload", "{}", "--db", db)
    assert json.loads(off.stdout) == []

    both = cli(
        tmp_path, "triggers", "create", "x", "--workflow", "shipping", "--event", "e",
        "--after", "shipping", "--db", db,
    )  # fmt: skip
    assert both.returncode == 2 and "exactly one" in both.stderr
    bad = cli(
        tmp_path, "triggers", "create", "x", "--workflow", "shipping", "--event", "e",
        "--config", '{"throttle": {"limit": 0, "period": "1m"}}', "--db", db,
    )  # fmt: skip
    assert bad.returncode != 0 and "/throttle/limit" in bad.stderr
    assert cli(tmp_path, "triggers", "delete", "ship", "--db", db).returncode == 0
    gone = cli(tmp_path, "triggers", "get", "ship", "--db", db)
    assert gone.returncode != 0 and "not found" in gone.stderr
