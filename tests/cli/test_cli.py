"""Acceptance tests of the ``flowyard`` command line, in process (:func:`support.cli.cli`);
``run --wait`` on PostgreSQL goes through the real console script in a subprocess."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support.cli import cli, cli_subprocess
from support.definitions import FIVE_MISTAKES, FIVE_POINTERS
from support.http import RecordingServer, Reply

EXAMPLES = Path(__file__).parents[2] / "examples"
LEAD_ROUTING = EXAMPLES / "lead_routing_http.json"


def crm_vars(server: RecordingServer) -> str:
    return json.dumps({"crm_url": f"{server.url}/crm", "notify_url": f"{server.url}/notify"})


def run_lead(
    cwd: Path, db: str, server: RecordingServer, region: str, *extra: str, run: Any = cli
) -> subprocess.CompletedProcess[str]:
    lead = json.dumps({"region": region, "email": "a@b.c"})
    args = ["run", str(LEAD_ROUTING), "--db", db, "--input", lead, "--vars", crm_vars(server)]
    result: subprocess.CompletedProcess[str] = run(cwd, *args, "--json", *extra)
    return result


def assert_lead_routed(
    result: subprocess.CompletedProcess[str], server: RecordingServer, region: str
) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    printed: dict[str, Any] = json.loads(result.stdout)
    east = region == "East Coast"
    branch = "create_account" if east else "assign_pool"
    assert printed["status"] == "succeeded"
    assert [s["node_id"] for s in printed["steps"]] == [
        "new_lead",
        "is_east",
        branch,
        "notify",
        "done",
    ]
    assert {s["status"] for s in printed["steps"]} == {"succeeded"}
    assert printed["output"] == {"email": "a@b.c", "route": "east" if east else "pool"}
    assert printed["events"][-1]["type"] == "run.succeeded"
    [crm] = server.to("/crm/accounts" if east else "/crm/pool")
    assert crm.json()["email"] == "a@b.c"
    assert crm.headers["Idempotency-Key"] == f"{printed['run_id']}:{branch}:0"
    return printed


# -- validate -----------------------------------------------------------------------------------


def test_validate_prints_every_mistake(workdir: Path) -> None:
    path = workdir / "broken.json"
    path.write_text(json.dumps(FIVE_MISTAKES))
    result = cli(workdir, "validate", str(path))
    assert result.returncode == 1
    assert "5 problems" in result.stderr
    for pointer in FIVE_POINTERS:
        assert f"  {pointer}: " in result.stderr, (pointer, result.stderr)
    assert "valid" not in result.stdout


@pytest.mark.parametrize("sample", ["lead_routing_http.json", "approval.json"])
def test_validate_samples(workdir: Path, sample: str) -> None:
    result = cli(workdir, "validate", str(EXAMPLES / sample))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": valid")


def test_validate_from_stdin(workdir: Path) -> None:
    ok = cli(workdir, "validate", "-", stdin=LEAD_ROUTING.read_text())
    assert ok.returncode == 0, ok.stderr
    bad = cli(workdir, "validate", "-", stdin=json.dumps(FIVE_MISTAKES))
    assert bad.returncode == 1
    assert all(pointer in bad.stderr for pointer in FIVE_POINTERS)


def test_validate_malformed_json(workdir: Path) -> None:
    path = workdir / "bad.json"
    path.write_text('{"name": "x",\n "nodes": [}')
    result = cli(workdir, "validate", str(path))
    assert result.returncode == 2
    assert "is not valid JSON" in result.stderr
    assert "line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_missing_file(workdir: Path) -> None:
    result = cli(workdir, "validate", str(workdir / "absent.json"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "absent.json" in result.stderr
    assert "Traceback" not in result.stderr


# -- run ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["East Coast", "West"])
def test_run_and_wait(workdir: Path, db: str, http_server: RecordingServer, region: str) -> None:
    assert_lead_routed(run_lead(workdir, db, http_server, region, "--wait"), http_server, region)


def test_run_and_wait_on_a_failing_run_exits_non_zero(
    workdir: Path, db: str, http_server: RecordingServer
) -> None:
    http_server.script("/crm/accounts", [Reply(400, {"error": "duplicate"})])
    result = run_lead(workdir, db, http_server, "East Coast", "--wait")
    assert result.returncode == 1
    printed = json.loads(result.stdout)
    assert printed["status"] == "failed"
    assert printed["error"]["type"] == "lead.account_not_created"
    nodes = [s["node_id"] for s in printed["steps"]]
    assert nodes == ["new_lead", "is_east", "create_account", "notify_failure", "failed"]


@pytest.mark.postgres
def test_run_and_wait_on_postgres(workdir: Path, pg_url: str, http_server: RecordingServer) -> None:
    """The console script itself (its entry point, a process of its own) on PostgreSQL."""
    result = run_lead(workdir, pg_url, http_server, "East Coast", "--wait", run=cli_subprocess)
    assert_lead_routed(result, http_server, "East Coast")
    listed = cli(workdir, "runs", "list", "--db", pg_url, "--json")
    assert [r["status"] for r in json.loads(listed.stdout)] == ["succeeded"]


@pytest.mark.parametrize(
    ("run_input", "pointer"),
    [
        ({"region": "West", "email": "ab"}, "/input/email"),
        ({"email": "a@b.c"}, "/input"),
    ],
)
def test_run_input_violating_the_schema(
    workdir: Path, db: str, run_input: dict[str, Any], pointer: str
) -> None:
    result = cli(workdir, "run", str(LEAD_ROUTING), "--db", db, "--input", json.dumps(run_input))
    assert result.returncode == 2
    assert "the run input is invalid" in result.stderr
    assert f"  {pointer}: " in result.stderr
    assert result.stdout == ""
    listed = cli(workdir, "runs", "list", "--db", db, "--json")
    assert json.loads(listed.stdout) == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--input", '{"region": ', "--input is not valid JSON"),
        ("--vars", "{nope}", "--vars is not valid JSON"),
        ("--vars", "[1, 2]", "--vars must be a JSON object"),
    ],
)
def test_run_with_invalid_json_option(
    workdir: Path, db: str, option: str, value: str, message: str
) -> None:
    result = cli(workdir, "run", str(LEAD_ROUTING), "--db", db, option, value)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_run_an_invalid_definition(workdir: Path, db: str) -> None:
    path = workdir / "broken.json"
    path.write_text(json.dumps(FIVE_MISTAKES))
    result = cli(workdir, "run", str(path), "--db", db)
    assert result.returncode == 2
    assert all(pointer in result.stderr for pointer in FIVE_POINTERS)


def test_run_an_unknown_workflow(workdir: Path, db: str) -> None:
    result = cli(workdir, "run", "no-such-workflow", "--db", db)
    assert result.returncode == 1
    assert "no-such-workflow" in result.stderr
    assert "Traceback" not in result.stderr


# -- runs list / show, db upgrade -----------------------------------------------------------------


def test_runs_list_and_show(workdir: Path, db: str, http_server: RecordingServer) -> None:
    done = run_lead(workdir, db, http_server, "East Coast", "--wait")
    done_id = assert_lead_routed(done, http_server, "East Coast")["run_id"]
    pending = run_lead(workdir, db, http_server, "West")  # started, not executed
    assert pending.returncode == 0, pending.stderr
    assert json.loads(pending.stdout)["status"] == "pending"
    pending_id = json.loads(pending.stdout)["run_id"]

    listed = cli(workdir, "runs", "list", "--db", db, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [
        (pending_id, "pending"),
        (done_id, "succeeded"),
    ]

    only_pending = cli(workdir, "runs", "list", "--db", db, "--json", "--status", "pending")
    assert [r["id"] for r in json.loads(only_pending.stdout)] == [pending_id]
    by_workflow = cli(
        workdir, "runs", "list", "--db", db, "--json", "--workflow", "lead-routing-http"
    )
    assert len(json.loads(by_workflow.stdout)) == 2

    table = cli(workdir, "runs", "list", "--db", db)
    assert table.returncode == 0, table.stderr
    # Whole ids, so they can be copied into ``runs show``.
    assert done_id in table.stdout and pending_id in table.stdout
    assert "succeeded" in table.stdout and "pending" in table.stdout

    shown = cli(workdir, "runs", "show", done_id, "--db", db)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["run_id"] == done_id and detail["status"] == "succeeded"
    assert [s["node_id"] for s in detail["steps"]][2] == "create_account"
    assert detail["events"][0]["type"] == "run.created"

    missing = cli(workdir, "runs", "show", "run_nope", "--db", db)
    assert missing.returncode == 1
    assert "run_nope" in missing.stderr and "not found" in missing.stderr


def test_db_upgrade(workdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    for _ in range(2):  # idempotent
        result = cli(workdir, "db", "upgrade", "--db", f"sqlite:///{path}")
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        [(revision,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"workflows", "workflow_versions", "runs", "steps", "run_events"} <= tables
    assert revision
    listed = cli(workdir, "runs", "list", "--db", f"sqlite:///{path}", "--json")
    assert json.loads(listed.stdout) == []
