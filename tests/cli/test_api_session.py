"""docs/api.md's "full editing session in curl" runs as written against ``flowyard serve``
with the samples, as ``make run`` serves (on a free port and a database of the test's own,
the admin's password the doc's): login,
open a draft, add a node, patch, undo, redo, publish, read the version."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cli.test_readme import json_documents
from support.serve import serve_process

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "api.md"
MARKER = "<!-- the editing session -->"


def editing_session() -> str:
    """The shell block right after the marker."""
    text = DOC.read_text()
    found = re.search(re.escape(MARKER) + r"\n```sh\n(.*?)```", text, re.S)
    assert found, f"no sh block after {MARKER} in docs/api.md"
    return found.group(1)


def doc_password(script: str) -> str:
    found = re.search(r"username=admin&password=([^'&\s]+)", script)
    assert found
    return found.group(1)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="the session uses curl")
def test_the_editing_session_runs_as_written(tmp_path: Path) -> None:
    script = editing_session()
    # As `make run` serves: the samples loaded (the session's workflow is not one of them).
    env = {"FLOWYARD_ADMIN_PASSWORD": doc_password(script), "FLOWYARD_LOAD_SAMPLES": "1"}
    with serve_process(f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "serve.log", env) as server:
        asyncio.run(server.wait_ready())
        result = subprocess.run(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                script.replace("localhost:8000", f"127.0.0.1:{server.port}"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    created, *drafts, published, version = json_documents(result.stdout)
    assert created["version"]["version"] == 1
    added, undone = drafts[1], drafts[3]
    assert [d["etag"] for d in drafts] == ['"d1"', '"d2"', '"d3"', '"d4"', '"d5"']
    assert all(d["valid"] for d in drafts), [d["problems"] for d in drafts]

    def message(draft: dict[str, Any]) -> str | None:
        nodes = {n["id"]: n for n in draft["document"]["definition"]["nodes"]}
        shout = nodes.get("shout")
        return None if shout is None else str(shout["config"]["message"])

    assert [message(d) for d in drafts] == [
        None,
        "HELLO",
        "HI {{ input.name }}",
        "HELLO",
        "HI {{ input.name }}",
    ]
    assert added["last_step"] == "add node shout after hello"
    assert (undone["undo_depth"], undone["redo_depth"]) == (1, 1)
    assert published["version"]["version"] == 2
    assert version["version"] == 2
    nodes = {n["id"]: n for n in version["definition"]["nodes"]}
    assert (nodes["hello"]["next"], nodes["shout"]["next"]) == ("shout", "done")
    assert version["layout"]["nodes"]["shout"] == {"x": 240, "y": 0}
