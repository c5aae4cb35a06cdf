"""``flowyard runs cancel|pause|resume|retry|retry-failed`` and ``runs list --error-type``,
run in process (:func:`support.cli.cli`) on a SQLite file."""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import Any

from flowyard.bootstrap import build
from flowyard.settings import Settings
from lifecycle.helpers import http_chain
from support.cli import cli, messages
from support.http import RecordingServer, Reply
from support.runs import wait_for_runs

ACTOR = f"cli:{getpass.getuser()}"


def start(cwd: Path, db: str, definition: dict[str, Any], *extra: str) -> dict[str, Any]:
    """``flowyard run`` a definition (pending, or executed with ``--wait``); the run."""
    path = cwd / f"{definition['name']}.json"
    path.write_text(json.dumps(definition))
    result = cli(cwd, "run", str(path), "--db", db, "--json", *extra)
    assert result.returncode in (0, 1), result.stderr
    run: dict[str, Any] = json.loads(result.stdout)
    return run


def show(cwd: Path, db: str, run_id: str) -> dict[str, Any]:
    result = cli(cwd, "runs", "show", run_id, "--db", db)
    assert result.returncode == 0, result.stderr
    run: dict[str, Any] = json.loads(result.stdout)
    return run


def lifecycle_events(run: dict[str, Any]) -> list[tuple[str, str | None]]:
    kinds = ("run.cancelled", "run.paused", "run.resumed", "run.retried")
    return [(e["type"], e["actor"]) for e in run["events"] if e["type"] in kinds]


def execute(db: str, run_ids: list[str]) -> None:
    """Drive runs to their end with an in-process worker on the same database."""

    async def main() -> None:
        container = await build(Settings(db_url=db, poll_interval_s=0.05, load_plugins=False))
        try:
            await wait_for_runs(container, run_ids)
        finally:
            await container.close()

    asyncio.run(main())


def test_cancel(workdir: Path, db: str, http_server: RecordingServer) -> None:
    run_id = start(workdir, db, http_chain("one", http_server.url, "/a"))["run_id"]
    cancelled = cli(workdir, "runs", "cancel", run_id, "--reason", "duplicate", "--db", db)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"run {run_id} cancelled: cancelled" in cancelled.stdout
    run = show(workdir, db, run_id)
    assert run["status"] == "cancelled"
    assert lifecycle_events(run) == [("run.cancelled", ACTOR)]
    assert run["events"][-1]["data"]["reason"] == "duplicate"

    again = cli(workdir, "runs", "cancel", run_id, "--db", db)
    assert again.returncode == 1
    assert messages(again).startswith("error: ") and "cancelled" in again.stderr
    assert "Traceback" not in again.stderr

    missing = cli(workdir, "runs", "cancel", "run_nope", "--db", db)
    assert missing.returncode == 1
    assert "run_nope" in missing.stderr and "not found" in missing.stderr


def test_pause_and_resume(workdir: Path, db: str, http_server: RecordingServer) -> None:
    run_id = start(workdir, db, http_chain("one", http_server.url, "/a"))["run_id"]
    paused = cli(workdir, "runs", "pause", run_id, "--db", db)
    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stdout
    twice = cli(workdir, "runs", "pause", run_id, "--db", db)
    assert twice.returncode == 1 and messages(twice).startswith("error: ")
    assert "paused" in twice.stderr

    resumed = cli(workdir, "runs", "resume", run_id, "--db", db)
    assert resumed.returncode == 0, resumed.stderr
    assert f"run {run_id} resumed: pending" in resumed.stdout
    not_paused = cli(workdir, "runs", "resume", run_id, "--db", db)
    assert not_paused.returncode == 1 and "not paused" in not_paused.stderr
    run = show(workdir, db, run_id)
    assert lifecycle_events(run) == [("run.paused", ACTOR), ("run.resumed", ACTOR)]

    for action in ("pause", "resume", "retry"):
        missing = cli(workdir, "runs", action, "run_nope", "--db", db)
        assert missing.returncode == 1, action
        assert "run_nope" in missing.stderr and "not found" in missing.stderr


def test_retry_from_the_failed_step(workdir: Path, db: str, http_server: RecordingServer) -> None:
    http_server.script("/n2", [Reply(400, {"error": "bad"})])
    definition = http_chain("chain", http_server.url, "/n1", "/n2", "/n3")
    failed = start(workdir, db, definition, "--wait")
    run_id = failed["run_id"]
    assert failed["status"] == "failed" and failed["error"]["type"] == "http.400"

    http_server.script("/n2", [Reply(200, {"ok": True})])
    retried = cli(workdir, "runs", "retry", run_id, "--db", db)
    assert retried.returncode == 0, retried.stderr
    assert f"run {run_id} retried: running" in retried.stdout
    execute(db, [run_id])

    run = show(workdir, db, run_id)
    assert run["status"] == "succeeded"
    assert len(http_server.to("/n1")) == 1 and len(http_server.to("/n2")) == 2
    assert lifecycle_events(run) == [("run.retried", ACTOR)]
    again = cli(workdir, "runs", "retry", run_id, "--db", db)
    assert again.returncode == 1
    assert messages(again).startswith("error: ") and "succeeded" in again.stderr


def failing_runs(workdir: Path, db: str, server: RecordingServer) -> dict[str, str]:
    """Runs that failed: two with http.400, one with http.500; {run_id: error type}."""
    server.script("/bad", [Reply(400, {"error": "bad"})])
    server.script("/down", [Reply(500, {"error": "down"})])
    bad = http_chain("bad", server.url, "/bad")
    down = http_chain("down", server.url, "/down")
    runs = [start(workdir, db, d, "--wait") for d in (bad, bad, down)]
    return {r["run_id"]: r["error"]["type"] for r in runs}


def listed(workdir: Path, db: str, *args: str) -> list[str]:
    result = cli(workdir, "runs", "list", "--db", db, "--json", *args)
    assert result.returncode == 0, result.stderr
    return [r["id"] for r in json.loads(result.stdout)]


def test_list_by_error_type(workdir: Path, db: str, http_server: RecordingServer) -> None:
    failed = failing_runs(workdir, db, http_server)
    bad = sorted((r for r, t in failed.items() if t == "http.400"), reverse=True)
    assert len(bad) == 2
    assert listed(workdir, db, "--error-type", "http.400") == bad
    assert listed(workdir, db, "--status", "failed", "--error-type", "http.*") == sorted(
        failed, reverse=True
    )
    assert listed(workdir, db, "--error-type", "http.5*", "--workflow", "bad") == []
    rows = json.loads(cli(workdir, "runs", "list", "--db", db, "--json").stdout)
    assert {r["id"]: r["error_type"] for r in rows} == failed
    table = cli(workdir, "runs", "list", "--db", db, "--error-type", "http.500")
    assert "http.500" in table.stdout and "http.400" not in table.stdout


def test_retry_failed_asks_first(workdir: Path, db: str, http_server: RecordingServer) -> None:
    failed = failing_runs(workdir, db, http_server)
    declined = cli(
        workdir, "runs", "retry-failed", "--error-type", "http.*", "--db", db, stdin="n\n"
    )
    assert declined.returncode == 0, declined.stderr
    assert "3 failed run(s) would be retried" in declined.stdout
    assert "Retry them?" in declined.stdout
    assert "nothing retried" in declined.stderr
    assert listed(workdir, db, "--status", "failed") == sorted(failed, reverse=True)

    nothing = cli(workdir, "runs", "retry-failed", "--error-type", "nope.*", "--db", db)
    assert nothing.returncode == 0, nothing.stderr
    assert "0 failed run(s) would be retried" in nothing.stdout
    assert "Retry them?" not in nothing.stdout

    accepted = cli(
        workdir, "runs", "retry-failed", "--error-type", "http.500", "--db", db, stdin="y\n"
    )
    assert accepted.returncode == 0, accepted.stderr
    [down] = [r for r, t in failed.items() if t == "http.500"]
    assert "retried 1 of 1 run(s)" in accepted.stdout and down in accepted.stdout
    assert show(workdir, db, down)["status"] == "running"


def test_retry_failed_with_yes(workdir: Path, db: str, http_server: RecordingServer) -> None:
    failed = failing_runs(workdir, db, http_server)
    bad = sorted((r for r, t in failed.items() if t == "http.400"), reverse=True)
    http_server.script("/bad", [Reply(200, {"ok": True})])
    result = cli(
        workdir,
        "runs",
        "retry-failed",
        "--error-type",
        "http.400",
        "--status",
        "failed",
        "--limit",
        "10",
        "--yes",
        "--json",
        "--db",
        db,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"matched": 2, "retried": bad, "skipped": []}
    execute(db, bad)
    for run_id in bad:
        run = show(workdir, db, run_id)
        assert run["status"] == "succeeded"
        assert lifecycle_events(run) == [("run.retried", ACTOR)]
    [down] = [r for r, t in failed.items() if t == "http.500"]
    assert show(workdir, db, down)["status"] == "failed"

    by_workflow = cli(workdir, "runs", "retry-failed", "--workflow", "down", "-y", "--db", db)
    assert by_workflow.returncode == 0, by_workflow.stderr
    assert "retried 1 of 1 run(s)" in by_workflow.stdout

    wrong = cli(workdir, "runs", "retry-failed", "--status", "succeeded", "--yes", "--db", db)
    assert wrong.returncode == 2 and "succeeded" in wrong.stderr
    unknown = cli(workdir, "runs", "retry-failed", "--workflow", "nope", "--yes", "--db", db)
    assert unknown.returncode == 1 and "nope" in unknown.stderr
