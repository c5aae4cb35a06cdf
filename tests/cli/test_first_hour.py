"""A first hour without traps, through the ``flowyard`` command line (in process,
:func:`support.cli.cli`; ``serve`` and ``worker`` in a subprocess): ``run --wait`` shows
progress and the cause, known failures are one line, one default data directory, a
validation that answers like saving, the smaller CLI fixes, and the key-file refusal."""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from support.cli import cli, messages
from support.http import RecordingServer, Reply
from support.pg import admin_url

EXAMPLES = Path(__file__).parents[2] / "examples"
LEAD_ROUTING = EXAMPLES / "lead_routing_http.json"
LEAD = json.dumps({"region": "East Coast", "email": "a@b.c"})
PASSWORD = "a-long-enough-password-9"


def crm_vars(server: RecordingServer) -> str:
    return json.dumps({"crm_url": f"{server.url}/crm", "notify_url": f"{server.url}/notify"})


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one ``error: ...`` line and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = messages(result).splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- run --wait ----------------------------------------------------------------------------------


def test_run_wait_shows_each_step_and_the_cause_of_a_failure(
    workdir: Path, db: str, http_server: RecordingServer
) -> None:
    http_server.script("/crm/accounts", [Reply(400, {"error": "duplicate"})])
    args = ["--db", db, "--input", LEAD, "--vars", crm_vars(http_server)]
    result = cli(workdir, "run", str(LEAD_ROUTING), *args, "--wait")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) < 15, result.stdout  # a summary, not the run as JSON
    progress = [line.split()[1:3] for line in lines if line.startswith("  ")]
    assert progress == [
        ["new_lead", "succeeded"],
        ["is_east", "succeeded"],
        ["create_account", "failed"],
        ["notify_failure", "succeeded"],
        ["failed", "failed"],
    ]
    assert re.search(
        r"run run_\w+ failed: lead\.account_not_created: the CRM refused", result.stdout
    )
    # The cause is the http step's error, not only the fail node's message.
    assert re.search(r"cause: step create_account \(attempt 1\) failed: http\.400", result.stdout)
    assert "flowyard runs retry run_" in result.stdout

    as_json = cli(workdir, "run", str(LEAD_ROUTING), *args, "--wait", "--json")
    assert as_json.returncode == 1
    printed = json.loads(as_json.stdout)
    assert printed["error"]["type"] == "lead.account_not_created"
    assert printed["cause"]["node_id"] == "create_account"
    assert printed["cause"]["error"]["type"] == "http.400"


def test_run_wait_success_prints_the_output(
    workdir: Path, db: str, http_server: RecordingServer
) -> None:
    args = ["--db", db, "--input", LEAD, "--vars", crm_vars(http_server), "--wait"]
    result = cli(workdir, "run", str(LEAD_ROUTING), *args)
    assert result.returncode == 0, result.stderr
    assert re.search(r"run run_\w+ succeeded", result.stdout)
    assert 'output: {"email": "a@b.c", "route": "east"}' in result.stdout
    assert "cause" not in result.stdout


def test_runs_retry_wait_succeeds_once_the_cause_is_fixed(
    workdir: Path, db: str, http_server: RecordingServer
) -> None:
    http_server.script("/crm/accounts", [Reply(400, {"error": "duplicate"}), Reply(201, {})])
    args = ["--db", db, "--input", LEAD, "--vars", crm_vars(http_server), "--wait", "--json"]
    run_id = json.loads(cli(workdir, "run", str(LEAD_ROUTING), *args).stdout)["run_id"]
    retried = cli(workdir, "runs", "retry", run_id, "--db", db, "--wait")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert f"run {run_id} succeeded" in retried.stdout
    shown = json.loads(cli(workdir, "runs", "show", run_id, "--db", db).stdout)
    nodes = [s["node_id"] for s in shown["steps"]]
    assert nodes == ["new_lead", "is_east", "create_account", "notify", "done"]


# -- one line per known failure --------------------------------------------------------------------


@pytest.mark.postgres
def test_a_missing_postgres_database_is_one_line(workdir: Path, pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/flowyard_missing_db"
    line = one_error_line(cli(workdir, "worker", "--db", missing))
    assert '"flowyard_missing_db" does not exist' in line and "createdb" in line


@pytest.mark.postgres
def test_an_unknown_postgres_user_is_one_line(workdir: Path, pg_url: str) -> None:
    host_part = admin_url().split("@", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql://nobody_here:secret-pw@{host_part}/postgres"
    result = cli(workdir, "runs", "list", "--db", url)
    line = one_error_line(result)
    assert "nobody_here" in line and "check the user name and password" in line
    assert "secret-pw" not in result.stderr  # the password is never printed


def test_a_refused_connection_is_one_line(workdir: Path) -> None:
    url = f"postgresql://postgres:pw@127.0.0.1:{closed_port()}/flowyard"
    for command in (("worker",), ("runs", "list"), ("db", "upgrade")):
        result = cli(workdir, *command, "--db", url)
        assert "connection refused" in one_error_line(result), command
        assert ":pw@" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("validate", "absent.json"),
        ("run", "absent.json", "--db", "sqlite:///x.db"),  # not a workflow name either
        ("credentials", "create", "c", "--type", "bearer", "--data-file", "absent.json"),
    ],
)
def test_a_missing_file_is_one_line(workdir: Path, command: tuple[str, ...]) -> None:
    line = one_error_line(cli(workdir, *command))
    assert "absent.json" in line


def test_an_unusable_data_directory_is_one_line(workdir: Path) -> None:
    (workdir / "blocker").write_text("a file where a directory should be")
    line = one_error_line(cli(workdir, "runs", "list", "--db", str(workdir / "blocker/x.db")))
    assert "cannot create the database" in line and "blocker" in line


def test_a_database_newer_than_the_code_is_one_line(workdir: Path, db: str) -> None:
    import sqlite3

    assert cli(workdir, "db", "upgrade", "--db", db).returncode == 0
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    line = one_error_line(cli(workdir, "runs", "list", "--db", db))
    assert "'9999_future'" in line and "Upgrade flowyard" in line


# -- one default database -----------------------------------------------------------------------


def test_every_command_uses_the_data_directory_wherever_it_runs(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    data = tmp_path / "xdg"
    env = {"XDG_DATA_HOME": str(data), "FLOWYARD_SECRET_KEY": None}
    created = cli(first, "users", "create", "ann", "--password", PASSWORD, env=env)
    assert created.returncode == 0, created.stderr
    database = data / "flowyard" / "flowyard.db"
    assert f"flowyard: database sqlite:///{database}" in created.stderr
    listed = cli(second, "users", "list", env=env)  # elsewhere: the same database
    assert "ann" in listed.stdout, listed.stderr
    assert not (first / "flowyard.db").exists() and not (second / "flowyard.db").exists()
    # The key file follows the database; both are owner-only, and so is the directory.
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "flowyard" / "flowyard.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700

    elsewhere = tmp_path / "elsewhere.db"
    short = cli(second, "users", "list", env={**env, "FLOWYARD_DB": str(elsewhere)})
    assert short.returncode == 0 and "ann" not in short.stdout
    assert f"flowyard: database {elsewhere}" in short.stderr
    old = cli(second, "users", "list", env={**env, "FLOWYARD_DB_URL": f"sqlite:///{elsewhere}"})
    assert f"flowyard: database sqlite:///{elsewhere}" in old.stderr


def test_a_database_left_in_the_current_directory_is_pointed_out(workdir: Path) -> None:
    (workdir / "flowyard.db").write_bytes(b"")
    result = cli(workdir, "runs", "list")
    assert result.returncode == 0, result.stderr
    assert "flowyard.db is not used" in result.stderr and "--db flowyard.db" in result.stderr


def test_serve_and_worker_help_show_the_defaults(workdir: Path) -> None:
    serve = " ".join(cli(workdir, "serve", "--help", env={"COLUMNS": "200"}).stdout.split())
    for default in ("127.0.0.1", "8000", "FLOWYARD_PORT", "FLOWYARD_DB", "flowyard.db"):
        assert default in serve, default
    worker = " ".join(cli(workdir, "worker", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "32" in worker and "FLOWYARD_CONCURRENCY" in worker


# -- validate answers like saving -----------------------------------------------------------------


def test_validate_looks_up_credentials_like_saving(workdir: Path, db: str) -> None:
    definition = {
        "name": "uses-a-credential",
        "start": "call",
        "nodes": [
            {
                "id": "call",
                "type": "http",
                "config": {"method": "GET", "url": "https://crm.example", "credential": "crm"},
            }
        ],
    }
    path = workdir / "wf.json"
    path.write_text(json.dumps(definition))
    refused = cli(workdir, "validate", str(path), "--db", db)
    assert refused.returncode == 1
    assert "/nodes/0/config/credential: no credential named 'crm'" in refused.stderr
    saved = cli(workdir, "run", str(path), "--db", db)
    assert saved.returncode == 2 and "no credential named 'crm'" in saved.stderr

    created = cli(
        workdir, "credentials", "create", "crm", "--type", "bearer", "--data-file", "-",
        "--allowed-origin", "https://crm.example.com", "--db", db,
        stdin=json.dumps({"token": "t0k3n-value"}),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    # Wide: at 80 columns rich wraps a long temporary path before " valid".
    valid = cli(workdir, "validate", str(path), "--db", db, env={"COLUMNS": "250"})
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.strip().endswith(": valid")


# -- smaller -----------------------------------------------------------------------------------


def test_api_keys_list_shows_whole_ids_that_revoke_accepts(workdir: Path, db: str) -> None:
    name = "a-key-with-a-rather-long-name-for-the-deploy-pipeline"
    made = cli(workdir, "api-keys", "create", name, "--db", db)
    assert made.returncode == 0, made.stderr
    found = re.search(r"API key (key_\w+)", made.stderr)
    assert found is not None
    key_id = found.group(1)
    table = cli(workdir, "api-keys", "list", "--db", db, env={"COLUMNS": "60"})
    assert key_id in table.stdout, table.stdout
    listed = json.loads(cli(workdir, "api-keys", "list", "--db", db, "--json").stdout)
    assert [(k["id"], k["name"], k["revoked_at"]) for k in listed] == [(key_id, name, None)]
    assert cli(workdir, "api-keys", "revoke", key_id, "--db", db).returncode == 0
    [revoked] = json.loads(cli(workdir, "api-keys", "list", "--db", db, "--json").stdout)
    assert revoked["revoked_at"] is not None


def test_runs_list_names_the_workflow(workdir: Path, db: str) -> None:
    started = cli(workdir, "run", str(LEAD_ROUTING), "--db", db, "--input", LEAD, "--json")
    assert started.returncode == 0, started.stderr
    table = cli(workdir, "runs", "list", "--db", db)
    assert "lead-routing-http" in table.stdout
    [row] = json.loads(cli(workdir, "runs", "list", "--db", db, "--json").stdout)
    assert row["workflow"] == "lead-routing-http" and row["workflow_id"].startswith("wf_")
    plain = cli(workdir, "run", "lead-routing-http", "--db", db, "--input", LEAD)
    assert plain.returncode == 0 and re.search(r"run run_\w+ pending", plain.stdout)


# -- key file ---------------------------------------------------------------------------------


def test_a_lost_key_file_refuses_the_start_and_is_not_replaced(workdir: Path, db: str) -> None:
    env: dict[str, str | None] = {"FLOWYARD_SECRET_KEY": None}
    created = cli(
        workdir, "credentials", "create", "crm", "--type", "bearer", "--data-file", "-",
        "--allowed-origin", "https://crm.example.com", "--db", db,
        stdin=json.dumps({"token": "t0k3n-value"}), env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key_file = Path(db.removeprefix("sqlite:///")).with_suffix(".key")
    assert key_file.exists()
    key_file.rename(key_file.with_name("backup.key"))

    for command in (("runs", "list"), ("worker",), ("db", "upgrade")):
        line = one_error_line(cli(workdir, *command, "--db", db, env=env))
        assert f"the key file {key_file} is missing" in line, line
        assert "Restore" in line and "FLOWYARD_SECRET_KEY" in line and "(crm)" in line
        assert not key_file.exists()  # never silently replaced
    served = cli(workdir, "serve", "--port", "0", "--db", db, env=env, timeout=60)
    assert "is missing" in one_error_line(served)

    # What to give up can be listed and deleted; then the start goes ahead with a new key.
    listed = cli(workdir, "credentials", "list", "--db", db, env=env)
    assert listed.returncode == 0 and "crm" in listed.stdout
    assert not key_file.exists()
    deleted = cli(workdir, "credentials", "delete", "crm", "--db", db, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert cli(workdir, "runs", "list", "--db", db, env=env).returncode == 0
    assert key_file.exists()


def test_the_wrong_key_is_refused(workdir: Path, db: str) -> None:
    created = cli(
        workdir, "credentials", "create", "crm", "--type", "bearer", "--data-file", "-",
        "--allowed-origin", "https://crm.example.com", "--db", db,
        stdin=json.dumps({"token": "t0k3n-value"}),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    result = cli(workdir, "runs", "list", "--db", db, env={"FLOWYARD_SECRET_KEY": "cd" * 32})
    assert "FLOWYARD_SECRET_KEY is not the key" in one_error_line(result)
