"""``flowyard run --correlation-key`` and ``runs list --correlation-key/--parent``, in process
on a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli import cli, messages

UNIQUE = {
    "name": "outreach",
    "correlation": {"unique": True},
    "start": "wait_reply",
    "nodes": [{"id": "wait_reply", "type": "wait_for_signal", "config": {"signal": "reply"}}],
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def test_run_takes_a_key_and_lists_by_it(workdir: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    path = workdir / "outreach.json"
    path.write_text(json.dumps(UNIQUE))
    started = cli(workdir, "run", str(path), "--db", db, "--json", "--correlation-key", "c-1")
    assert started.returncode == 0, started.stderr
    run = json.loads(started.stdout)
    assert run["correlation_key"] == "c-1"

    again = cli(workdir, "run", "outreach", "--db", db, "--correlation-key", "c-1")
    assert again.returncode != 0
    error = messages(again)
    assert error.startswith("error: ") and run["run_id"] in error
    assert len(error.strip().splitlines()) == 1

    cli(workdir, "run", "outreach", "--db", db, "--correlation-key", "c-2")
    listed = cli(workdir, "runs", "list", "--db", db, "--json", "--correlation-key", "c-1")
    assert [(r["id"], r["correlation_key"]) for r in json.loads(listed.stdout)] == [
        (run["run_id"], "c-1")
    ]
    children = cli(workdir, "runs", "list", "--db", db, "--json", "--parent", run["run_id"])
    assert json.loads(children.stdout) == []


def test_signals_by_key_or_by_id_from_the_command_line(workdir: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    path = workdir / "outreach.json"
    path.write_text(json.dumps(UNIQUE))
    started = cli(workdir, "run", str(path), "--db", db, "--json", "--correlation-key", "c-1")
    run_id = json.loads(started.stdout)["run_id"]

    by_key = cli(
        workdir, "runs", "signal", "reply", "--workflow", "outreach", "--key", "c-1",
        "--data", '{"text": "yes"}', "--db", db,
    )  # fmt: skip
    assert by_key.returncode == 0, by_key.stderr
    assert by_key.stdout.strip().startswith(f"signal reply sent to run {run_id}: ")
    signals = json.loads(cli(workdir, "runs", "show", run_id, "--db", db).stdout)["events"]
    received = [e for e in signals if e["type"] == "signal.received"]
    assert received and received[0]["data"]["name"] == "reply"

    by_id = cli(workdir, "runs", "signal", "reply", "--run", run_id, "--db", db)
    assert by_id.returncode == 0, by_id.stderr

    for args, expected in (
        (("--key", "c-1"), "give --run RUN_ID, or --workflow WORKFLOW and --key KEY"),
        (("--run", run_id, "--workflow", "outreach"), "give --run RUN_ID"),
        (("--workflow", "outreach", "--key", "nobody"), "nobody"),
        (("--run", run_id, "--data", "{nope"), "--data is not valid JSON"),
    ):
        refused = cli(workdir, "runs", "signal", "reply", *args, "--db", db)
        assert refused.returncode != 0
        error = messages(refused)
        assert expected in error and len(error.strip().splitlines()) == 1, error
