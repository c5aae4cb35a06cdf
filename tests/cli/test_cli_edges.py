"""Bad data at the CLI's edges: a database URL's password is never printed (not even in the
retry hint), a malformed ``--db`` URL and a definition file that is not UTF-8 are one line
and exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli import cli, cli_subprocess, messages
from support.pg import create_database, drop_database, skip_or_fail_without_pg

FAILING = {
    "name": "boom",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "fail"},
        {"id": "fail", "type": "fail", "config": {"message": "boom"}},
    ],
}


def assert_one_line(stderr: str, *parts: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for part in parts:
        assert part in lines[0], stderr


@pytest.mark.postgres
def test_the_retry_hint_does_not_print_the_password(tmp_path: Path) -> None:
    """PostgreSQL on the test machine trusts local connections, so any password works: one
    is given, and must appear nowhere in what the CLI prints."""
    skip_or_fail_without_pg()
    url = create_database()
    try:
        with_password = url.replace("://postgres@", "://postgres:hunter2-s3cret@", 1)
        assert with_password != url
        definition = tmp_path / "boom.json"
        definition.write_text(json.dumps(FAILING))
        result = cli(tmp_path, "run", str(definition), "--wait", "--db", with_password)
    finally:
        drop_database(url)
    assert result.returncode != 0
    assert "flowyard runs retry" in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter2-s3cret@host:notaport/db",
        "postgresql://u:hunter2-s3cret@[::1/db",
        "postgresql://u:hunter2-s3cret@/db?port=x",
    ],
    ids=["port", "bracket", "query-port"],
)
def test_a_malformed_db_url_is_one_line(tmp_path: Path, url: str) -> None:
    result = cli(tmp_path, "runs", "list", "--db", url)
    assert result.returncode == 2, result.stderr
    assert_one_line(messages(result), "error: invalid database URL")
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_definition_file_that_is_not_utf8_is_one_line(
    tmp_path: Path, db: str, command: str
) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(FAILING).replace("boom", "b\xf6\xf6m").encode("latin-1"))
    args = [command, str(path)] + (["--db", db] if command == "run" else [])
    result = cli(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert_one_line(messages(result), "latin1.json is not UTF-8")


def test_stdin_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    """Bytes on a real pipe into the console script (stdin's decoding is the process's)."""
    result = cli_subprocess(tmp_path, "validate", "-", stdin=b'{"name": "b\xf6\xf6m"}')
    assert result.returncode == 2, result.stderr
    assert_one_line(result.stderr, "- is not UTF-8")
