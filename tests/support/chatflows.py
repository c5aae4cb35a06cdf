"""Helpers of the provider node tests (sms, whatsapp, slack, instagram, sentiment): a
one-node workflow, its run driven to the end by a real in-process worker, and the checks
that a secret is nowhere in what the run stored."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

from flowyard.bootstrap import Container
from flowyard.domain.credentials import secret_forms
from flowyard.service import RunDetail
from support.runs import run_definition


def sqlite_db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated SQLite database of the test's own (a copy of the session's template).

    The provider node tests use it as their ``db_url`` (``pytest.fixture(name="db_url")``):
    what they test is a node type and its provider, not the store, which the end-to-end
    tests (tests/integrations/test_chat_worker.py) run on both backends."""
    path = tmp_path / "flowyard.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def one_node(
    node_type: str,
    config: dict[str, Any],
    *,
    retry: dict[str, Any] | None = None,
    catch: list[dict[str, Any]] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A workflow of one ``node_type`` node called ``send`` (one attempt unless ``retry``)."""
    node: dict[str, Any] = {
        "id": "send",
        "type": node_type,
        "config": config,
        "retry": retry or {"max_attempts": 1},
    }
    nodes = [node]
    if catch is not None:
        node["catch"] = catch
        nodes.append({"id": "caught", "type": "end", "config": {"output": "caught"}})
    return {"name": name or f"{node_type}-test", "start": "send", "nodes": nodes}


async def run_node(
    container: Container,
    node_type: str,
    config: dict[str, Any],
    input: Any = None,
    **kwargs: Any,
) -> RunDetail:
    """Run a one-node workflow to its end with a real worker."""
    return await run_definition(container, one_node(node_type, config, **kwargs), input)


def step_error(detail: RunDetail) -> dict[str, Any]:
    """The error of the run's ``send`` step (it must have one)."""
    step = next(s for s in detail.steps if s.node_id == "send")
    assert step.error is not None, f"the step did not fail: {step.output}"
    return step.error


def stored_text(detail: RunDetail) -> str:
    """Everything the run stored that a reader could see: run, steps, events."""
    parts: list[Any] = [detail.run.output, detail.run.error]
    parts += [(s.output, s.error) for s in detail.steps]
    parts += [(e.type, e.data) for e in detail.events]
    return json.dumps(parts, default=str)


def assert_secret_free(text: str, *secrets: str) -> None:
    """None of ``secrets`` in ``text``, in any form redaction knows (case, base64, URL or
    JSON encoding)."""
    lowered = text.lower()
    for secret in secrets:
        for form in secret_forms(secret):
            assert form.lower() not in lowered, f"a form of a secret is in the text: {form!r}"


def basic(user: str, password: str) -> str:
    """The value of a basic ``Authorization`` header."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
