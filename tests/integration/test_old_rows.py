"""Rows an older version wrote, with values the API could not serve, are read repaired: every
read endpoint and ``flowyard runs show`` answer normally. The rows are written here with
plain SQL, as the old version's JSON encoder (``json.dumps``) did: on SQLite a lone
surrogate is kept as its escape and NaN/Infinity as bare tokens; PostgreSQL's jsonb never
took those, but took nesting of any depth."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from flowyard.bootstrap import Container
from flowyard.domain.jsonvalue import STORED_MAX_DEPTH, truncated_marker
from flowyard.domain.statuses import RunStatus
from support.api import API_ROOT, admin_client, assert_all_ok, read_everything
from support.cli import cli
from support.runs import wait_for_runs

FLOW: dict[str, Any] = {
    "name": "old",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "greet"},
        {"id": "greet", "type": "set", "config": {"values": {"hi": "there"}}, "next": "wait"},
        {"id": "wait", "type": "wait_for_signal", "config": {"signal": "go"}, "next": "done"},
        {"id": "done", "type": "end", "config": {"output": "{{ steps.greet.output }}"}},
    ],
}

#: What the old JSON encoder could write into SQLite (json.dumps, ensure_ascii, allow_nan).
SQLITE_BAD = (
    '{"s": "a\\ud800b", "k\\udc00": 1, "n": NaN, "i": Infinity, "m": -Infinity, '
    '"bs": "\\\\ud800", "ok": "\\ud83d\\ude00", "d": ' + "[" * 900 + "]" * 900 + "}"
)
#: What PostgreSQL's jsonb took: everything valid, nested 900 levels deep.
PG_BAD = '{"ok": "\\ud83d\\ude00", "d": ' + "[" * 900 + "]" * 900 + "}"

#: (table, JSON columns) an old row may have broken.
COLUMNS = {
    "workflow_versions": ["definition"],
    "runs": ["input", "vars", "output", "error"],
    "steps": ["output", "error"],
    "run_events": ["data"],
    "signals": ["payload"],
}


async def finished_run(container: Container) -> str:
    """A run that went through every table: versions, runs, steps, events, signals."""
    record, _, _ = await container.service.save_workflow(FLOW)
    run, _ = await container.service.start_run(record.id, {"name": "Ada"})
    await container.service.send_signal(run.id, "go", {"text": "yes"})
    await wait_for_runs(container, [run.id])
    assert (await container.store.get_run(run.id)).status == RunStatus.SUCCEEDED
    return run.id


def break_sqlite(url: str) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        for table, columns in COLUMNS.items():
            for column in columns:
                conn.execute(f"UPDATE {table} SET {column} = ?", (SQLITE_BAD,))


async def break_postgres(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for table, columns in COLUMNS.items():
            for column in columns:
                await conn.execute(f"UPDATE {table} SET {column} = $1::jsonb", PG_BAD)
    finally:
        await conn.close()


def depth_to_marker(value: Any) -> tuple[int, Any]:
    depth = 0
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    return depth, value


def assert_repaired(value: dict[str, Any], sqlite: bool) -> None:
    assert value["ok"] == "\U0001f600"
    # The column's object is level 1, "d" level 2: the lists at levels 2 to 200 are kept.
    assert depth_to_marker(value["d"]) == (STORED_MAX_DEPTH - 1, truncated_marker(200))
    if sqlite:
        assert value["s"] == "a\ufffdb"
        assert value["k\ufffd"] == 1
        assert value["n"] is value["i"] is value["m"] is None
        assert value["bs"] == "\\ud800"  # an escaped backslash, not an escape


async def test_every_read_survives_rows_of_an_older_version(
    container: Container, db_url: str, tmp_path: Path
) -> None:
    run_id = await finished_run(container)
    sqlite = db_url.startswith("sqlite")
    if sqlite:
        await asyncio.to_thread(break_sqlite, db_url)
    else:
        await break_postgres(db_url)

    async with admin_client(container, base_url=API_ROOT) as client:
        answers = await read_everything(client, run_id)
    assert_all_ok(answers)
    run = answers["run"].json()
    for column in ("input", "vars", "output", "error"):
        assert_repaired(run[column], sqlite)
    assert_repaired(answers["runs"].json()["items"][0]["input"], sqlite)
    for step in answers["steps"].json()["items"]:
        assert_repaired(step["output"], sqlite)
    for event in answers["events"].json()["items"]:
        assert_repaired(event["data"], sqlite)
    assert_repaired(answers["signals"].json()["items"][0]["payload"], sqlite)
    assert_repaired(answers["workflow"].json()["version"]["definition"], sqlite)
    assert_repaired(answers["version"].json()["definition"], sqlite)

    shown = cli(tmp_path, "runs", "show", run_id, "--db", db_url)
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)
    assert_repaired(printed["output"], sqlite)
    assert_repaired(printed["steps"][0]["output"], sqlite)


async def test_the_store_reads_good_rows_unchanged(container: Container) -> None:
    """The repairing reader gives back what was written, for the values a run may hold."""
    value = {
        "text": "héllo ✓ \U0001f600",
        "escaped": "\\ud800 is not an escape here",
        "numbers": [0, -1, 1.5, 12345678901234567890],
        "nested": [[[[{"a": None, "b": True}]]]],
    }
    record, _, _ = await container.service.save_workflow({**FLOW, "name": "good"})
    run, _ = await container.service.start_run(record.id, value)
    assert (await container.store.get_run(run.id)).input == value
