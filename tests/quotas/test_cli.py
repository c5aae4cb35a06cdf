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


def test_a_concurrency_limit_alone(workdir: Path, db: str) -> None:
    made = cli(workdir, "quotas", "set", "node_type:http", "--concurrency", "3", "--db", db)
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout)
    assert (shown["rate"], shown["concurrency"], shown["in_flight"]) == (None, 3, 0)
    listed = cli(workdir, "quotas", "list", "--db", db)
    assert listed.returncode == 0 and "node_type:http" in listed.stdout
    empty = cli(workdir, "quotas", "set", "node_type:http", "--db", db)
    assert empty.returncode != 0 and "/rate" in empty.stderr
    zero = cli(workdir, "quotas", "set", "node_type:http", "--concurrency", "0", "--db", db)
    assert zero.returncode != 0 and "/concurrency" in zero.stderr


def test_a_credentials_quota_from_the_credentials_command(workdir: Path, db: str) -> None:
    data = workdir / "token.json"
    data.write_text(json.dumps({"token": "t0k3n-for-crm"}))
    made = cli(
        workdir, "credentials", "create", "crm", "--type", "bearer", "--data-file", str(data),
        "--allowed-origin", "https://crm.example", "--db", db,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    none = cli(workdir, "credentials", "quota", "show", "crm", "--db", db)
    assert none.returncode != 0 and "has no quota" in none.stderr

    quota = ["credentials", "quota", "set", "crm", "10/s", "--concurrency", "2", "--db", db]
    made = cli(workdir, *quota)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["key"] == "credential:crm"
    # The same quota as the one keyed credential:crm.
    listed = cli(workdir, "quotas", "list", "--db", db)
    assert "credential:crm" in listed.stdout and "10 per 1s" in listed.stdout
    shown = json.loads(cli(workdir, "credentials", "quota", "show", "crm", "--db", db).stdout)
    assert (shown["rate"], shown["concurrency"]) == ("10 per 1s", 2)

    nobody = cli(workdir, "credentials", "quota", "set", "nobody", "--concurrency", "2", "--db", db)
    assert nobody.returncode != 0 and "not found" in nobody.stderr
    gone = cli(workdir, "credentials", "quota", "delete", "crm", "--db", db)
    assert gone.returncode == 0, gone.stderr
    again = cli(workdir, "quotas", "delete", "credential:crm", "--db", db)
    assert again.returncode != 0 and "not found" in again.stderr
