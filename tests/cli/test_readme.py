"""README.md from a fresh clone: every ``flowyard`` command it shows exists with the options
it uses, the API tour runs as written (on a free port and a database of the test's own), and
the CLI tour's example runs against ``examples/fake_crm.py``. (The whole README was also run
by hand from a fresh clone.)"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cli import cli, cli_env
from support.fuzz import free_port

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
GROUPS = {"runs", "db", "users", "api-keys", "credentials"}


def readme_commands() -> list[list[str]]:
    """The arguments of every ``.venv/bin/flowyard ...`` in README's shell blocks."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        text = block.replace("\\\n", " ")
        for match in re.finditer(r"\.venv/bin/flowyard ([^|)#&\n]*)", text):
            commands.append(shlex.split(match.group(1)))
    return commands


def api_tour() -> str:
    """The README's first tour: the shell block that starts the server and calls the API."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    return next(b for b in blocks if "flowyard serve" in b and "curl" in b)


def json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (curl adds no newline between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="the tour uses curl")
def test_the_api_tour_runs_as_written(tmp_path: Path) -> None:
    """Every line of the tour, as written, but for its port (8000 may be taken on a shared
    machine) and its database path (the test's own instead of /tmp). ``make venv`` has run:
    the suite runs in that environment."""
    port = free_port()
    script = (
        api_tour()
        .replace("localhost:8000", f"localhost:{port}")
        .replace("/tmp/flowyard-tour.db", str(tmp_path / "tour.db"))
        .replace("make venv", "true")
    )
    env = {**cli_env(tmp_path), "FLOWYARD_PORT": str(port)}
    env.pop("FLOWYARD_SECRET_KEY", None)  # key-file mode, as on a fresh machine
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    samples, started, runs = json_documents(result.stdout)
    assert "expense-approval" in {w["name"] for w in samples["items"]}
    assert started["input"] == {"amount": 5, "requester": "ann"}
    assert [r["id"] for r in runs["items"]] == [started["id"]]


def test_the_readme_shows_the_cli() -> None:
    shown = {tuple(c[:2]) if c[0] in GROUPS else (c[0],) for c in readme_commands()}
    assert {("run",), ("validate",), ("worker",), ("serve",), ("runs", "retry")} <= shown


@pytest.mark.parametrize("args", readme_commands(), ids=lambda a: " ".join(a[:3]))
def test_each_readme_command_exists_with_its_options(tmp_path: Path, args: list[str]) -> None:
    path = args[:2] if args[0] in GROUPS else args[:1]
    helped = cli(tmp_path, *path, "--help", env={"COLUMNS": "250"})
    assert helped.returncode == 0, helped.stderr
    for option in (a.split("=", 1)[0] for a in args if a.startswith("--")):
        assert option in helped.stdout, (path, option)


@pytest.fixture
def fake_crm() -> Iterator[str]:
    """examples/fake_crm.py on a free port; its base URL."""
    with subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "fake_crm.py"), "--port", "0", "--seconds", "60"],
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            assert found, line
            yield found.group(1)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_the_lead_routing_example_runs_against_the_fake_crm(tmp_path: Path, fake_crm: str) -> None:
    port = fake_crm.rsplit(":", 1)[1]
    env = {"FLOWYARD_EGRESS_ALLOW": f"127.0.0.1:{port}"}
    crm = json.dumps({"crm_url": f"{fake_crm}/crm", "notify_url": f"{fake_crm}/notify"})
    example = str(ROOT / "examples" / "lead_routing_http.json")
    assert cli(tmp_path, "validate", example, env=env).returncode == 0
    for region, route in (("East Coast", "east"), ("West", "pool")):
        lead = json.dumps({"region": region, "email": "a@example.com"})
        args = ["run", example, "--input", lead, "--vars", crm, "--wait"]
        result = cli(tmp_path, *args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f'"route": "{route}"' in result.stdout
    approval = json.dumps({"approval_url": f"{fake_crm}/approvals"})
    asked = cli(
        tmp_path, "run", str(ROOT / "examples" / "approval.json"), "--wait", "--json",
        "--input", json.dumps({"amount": 500, "requester": "ann"}), "--vars", approval, env=env,
    )  # fmt: skip
    assert json.loads(asked.stdout)["output"] == {"decision": "approved"}, asked.stderr


def test_cli_env_never_uses_the_real_home(tmp_path: Path) -> None:
    assert cli_env(tmp_path)["XDG_DATA_HOME"] == str(tmp_path / ".data")
