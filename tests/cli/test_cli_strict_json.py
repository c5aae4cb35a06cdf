"""The CLI reads JSON strictly: a file or option holding a lone surrogate, U+0000, NaN,
Infinity, 1e999 or nesting deeper than 64 levels exits 2 with one line naming the place,
and nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli import cli, messages

LEAD_ROUTING = Path(__file__).parents[2] / "examples" / "lead_routing_http.json"


def assert_one_line(stderr: str, *parts: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for part in parts:
        assert part in lines[0], stderr


@pytest.mark.parametrize(
    ("option", "value", "where"),
    [
        ("--input", '{"region": NaN}', "/region"),
        ("--input", '{"email": 1e999}', "/email"),
        ("--input", '{"n": [1' + "0" * 4300 + "]}", "/n/0"),
        ("--input", '{"email": "\\ud800"}', "/email"),
        ("--input", '{"email": "\\u0000"}', "/email"),
        ("--vars", '{"x": Infinity}', "/x"),
        ("--input", '{"lead": {"region": "East", "region": "West"}}', "/lead"),
        ("--vars", '{"x": ' + "[" * 100 + "]" * 100 + "}", "/x/0/0"),
    ],
)
def test_json_options_are_strict(
    workdir: Path, db: str, option: str, value: str, where: str
) -> None:
    result = cli(workdir, "run", str(LEAD_ROUTING), "--db", db, option, value)
    assert result.returncode == 2, result.stdout
    assert_one_line(messages(result), f"{option} is not acceptable JSON", f" at {where}")
    listed = cli(workdir, "runs", "list", "--db", db, "--json")
    assert json.loads(listed.stdout) == []


def test_definition_files_are_strict(workdir: Path, db: str) -> None:
    definition = json.loads(LEAD_ROUTING.read_text())
    text = json.dumps({**definition, "vars": {"limit": "LIMIT"}}).replace('"LIMIT"', "NaN")
    path = workdir / "nan.json"
    path.write_text(text)
    for command in (["validate", str(path)], ["run", str(path), "--db", db]):
        result = cli(workdir, *command)
        assert result.returncode == 2, (command, result.stdout)
        assert_one_line(messages(result), "nan.json is not acceptable JSON", " at /vars/limit")
    listed = cli(workdir, "runs", "list", "--db", db, "--json")
    assert json.loads(listed.stdout) == []
