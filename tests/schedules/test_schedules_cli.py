"""``flowyard schedules create|list|show|pause|resume|trigger|delete`` through the real
console script (SQLite file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowyard.bootstrap import build
from flowyard.settings import Settings
from support.cli import cli

DEFINITION = {
    "name": "report",
    "input_schema": {"type": "object", "required": ["region"]},
    "start": "a",
    "nodes": [{"id": "a", "type": "set", "config": {"values": {"done": True}}}],
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
async def db(tmp_path: Path) -> str:
    """A SQLite file holding the workflow ``report`` (the CLI has no command to save one)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    container = await build(Settings(db_url=url, workers=0, load_plugins=False))
    try:
        await container.service.create_workflow(DEFINITION, "tester")
    finally:
        await container.close()
    return url


def test_create_list_show_pause_trigger_delete(workdir: Path, db: str) -> None:
    made = cli(
        workdir,
        "schedules",
        "create",
        "nightly",
        "--workflow",
        "report",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--input",
        '{"region": "EU"}',
        "--overlap",
        "skip",
        "--db",
        db,
    )
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout)
    assert (shown["name"], shown["cron"], shown["overlap"]) == ("nightly", "0 2 * * *", "skip")
    assert len(shown["next_fire_times"]) == 5

    listed = cli(workdir, "schedules", "list", "--db", db)
    assert (
        listed.returncode == 0 and "nightly" in listed.stdout and "Europe/Berlin" in listed.stdout
    )
    show = cli(workdir, "schedules", "show", shown["id"], "--db", db)
    assert json.loads(show.stdout)["name"] == "nightly"

    paused = cli(workdir, "schedules", "pause", "nightly", "--db", db)
    assert json.loads(paused.stdout)["enabled"] is False
    fired = cli(workdir, "schedules", "trigger", "nightly", "--db", db)
    assert fired.returncode == 0, fired.stderr
    tick = json.loads(fired.stdout)
    assert tick["outcome"] == "fired" and tick["run_id"].startswith("run_")
    resumed = cli(workdir, "schedules", "resume", "nightly", "--db", db)
    assert json.loads(resumed.stdout)["enabled"] is True

    gone = cli(workdir, "schedules", "delete", "nightly", "--db", db)
    assert gone.returncode == 0, gone.stderr
    again = cli(workdir, "schedules", "delete", "nightly", "--db", db)
    assert again.returncode != 0 and "not found" in again.stderr


def test_bad_input_is_one_line_and_a_non_zero_exit(workdir: Path, db: str) -> None:
    bad = cli(
        workdir,
        "schedules",
        "create",
        "x",
        "--workflow",
        "report",
        "--cron",
        "* * *",
        "--input",
        '{"region": "EU"}',
        "--db",
        db,
    )
    assert bad.returncode != 0 and "/cron" in bad.stderr
    naive = cli(
        workdir,
        "schedules",
        "create",
        "x",
        "--workflow",
        "report",
        "--every",
        "5m",
        "--start-at",
        "2026-12-01T09:00:00",
        "--db",
        db,
    )
    assert naive.returncode != 0 and "offset" in naive.stderr
    assert cli(workdir, "schedules", "show", "nope", "--db", db).returncode != 0
