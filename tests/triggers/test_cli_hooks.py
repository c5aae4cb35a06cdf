"""``flowyard hooks ...``: create, list, disable, delete; bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import cli
from triggers.conftest import GREETER, SECRET


def test_hooks_from_the_command_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    definition = tmp_path / "greeter.json"
    definition.write_text(json.dumps(GREETER))
    saved = cli(
        tmp_path, "run", str(definition), "--input", '{"email": "a@example.com"}', "--db", db
    )
    assert saved.returncode == 0, saved.stderr
    made = cli(
        tmp_path, "credentials", "create", "hook-secret", "--type", "webhook_secret",
        "--data-file", "-", "--db", db, stdin=json.dumps({"secret": SECRET}),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = cli(
        tmp_path, "hooks", "create", "leads", "--workflow", "greeter", "--scheme", "hmac",
        "--credential", "hook-secret", "--config", '{"respond": "on_finish"}', "--db", db,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    hook = json.loads(created.stdout)
    assert hook["url"] == f"/api/v1/hooks/{hook['id']}"
    assert hook["config"]["respond"]["mode"] == "on_finish"
    assert SECRET not in created.stdout
    bad = cli(
        tmp_path, "hooks", "create", "other", "--workflow", "greeter", "--scheme", "hmac",
        "--credential", "hook-secret", "--config", '{"respond": {"timeout_s": 99}}', "--db", db,
    )  # fmt: skip
    assert bad.returncode == 2 and "/respond/timeout_s" in bad.stderr
    listed = cli(tmp_path, "hooks", "list", "--db", db, env={"COLUMNS": "250"})
    assert listed.returncode == 0 and "leads" in listed.stdout and "hmac" in listed.stdout
    disabled = cli(tmp_path, "hooks", "disable", "leads", "--db", db)
    assert disabled.returncode == 0 and "disabled" in disabled.stdout
    shown = json.loads(cli(tmp_path, "hooks", "get", hook["id"], "--db", db).stdout)
    assert shown["enabled"] is False
    assert cli(tmp_path, "hooks", "delete", "leads", "--db", db).returncode == 0
    gone = cli(tmp_path, "hooks", "get", "leads", "--db", db)
    assert gone.returncode == 1 and "not found" in gone.stderr
