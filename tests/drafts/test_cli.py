"""``flowyard draft ...`` on SQLite and PostgreSQL: a scripted editing session through the
service, and its errors as one line on stderr with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drafts.test_api import lead_routing
from flowyard.bootstrap import Container
from support.cli import cli, messages


def draft(tmp_path: Path, db: str, *args: str) -> Any:
    done = cli(tmp_path, "draft", *args, "--db", db)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.lstrip().startswith("{") else done.stdout


def refused(tmp_path: Path, db: str, *args: str) -> tuple[int, str]:
    done = cli(tmp_path, "draft", *args, "--db", db)
    errors = messages(done)
    assert errors.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return done.returncode, errors


async def test_a_scripted_session_edits_undoes_and_publishes(
    tmp_path: Path, container: Container, db_url: str
) -> None:
    await container.service.create_workflow(lead_routing())
    opened = draft(tmp_path, db_url, "open", "lead-routing")
    assert (opened["etag"], opened["valid"], opened["base_version"]) == ('"d1"', True, 1)
    node = json.dumps({"id": "audit", "type": "log", "config": {"message": "in"}})
    added = draft(tmp_path, db_url, "add-node", "lead-routing", node, "--after", "east",
                  "--position", '{"x": 1, "y": 2}', "--if-match", '"d1"')  # fmt: skip
    assert (added["etag"], added["undo_depth"]) == ('"d2"', 1)
    assert added["last_step"] == "add node audit after east"
    changed = draft(tmp_path, db_url, "set", "lead-routing", "audit", '{"timeout_s": 5}')
    renamed = draft(tmp_path, db_url, "rename", "lead-routing", "audit", "check")
    assert (changed["etag"], renamed["etag"]) == ('"d3"', '"d4"')
    removed = draft(tmp_path, db_url, "rm-node", "lead-routing", "check", "--edges", "reconnect")
    assert removed["valid"] is True
    shown = draft(tmp_path, db_url, "show", "lead-routing")
    nodes = {n["id"]: n for n in shown["document"]["definition"]["nodes"]}
    assert "check" not in nodes and nodes["east"]["next"] == "done"
    undone = draft(tmp_path, db_url, "undo", "lead-routing", "--if-match", "d5")
    assert (undone["undo_depth"], undone["redo_depth"]) == (3, 1)
    shown = draft(tmp_path, db_url, "show", "lead-routing")
    nodes = {n["id"]: n for n in shown["document"]["definition"]["nodes"]}
    assert nodes["east"]["next"] == "check" and nodes["check"]["timeout_s"] == 5
    assert shown["document"]["layout"] == {"nodes": {"check": {"x": 1, "y": 2}}}
    history = draft(tmp_path, db_url, "history", "lead-routing")
    assert [s["undone"] for s in history["items"]] == [True, False, False, False]
    assert {s["actor"] for s in history["items"]} == {history["items"][0]["actor"]}
    assert history["items"][0]["actor"].startswith("cli:")
    redone = draft(tmp_path, db_url, "redo", "lead-routing")
    assert redone["redo_depth"] == 0
    # Added, then removed again: the draft is version 1 as it was, so no version is made.
    published = draft(tmp_path, db_url, "publish", "lead-routing")
    assert (published["version"], published["created"]) == (1, False)
    version = await container.service.get_version(published["id"], 1)
    assert "check" not in {n["id"] for n in version.definition["nodes"]}
    code, errors = refused(tmp_path, db_url, "show", "lead-routing")
    assert code == 1 and "has no draft" in errors


async def test_errors_are_one_line_and_a_non_zero_exit(
    tmp_path: Path, container: Container, db_url: str
) -> None:
    code, errors = refused(tmp_path, db_url, "open", "nowhere")
    assert code == 1 and "not found" in errors
    await container.service.create_workflow(lead_routing())
    draft(tmp_path, db_url, "open", "lead-routing")
    code, errors = refused(tmp_path, db_url, "open", "lead-routing")
    assert code == 1 and "already has a draft" in errors
    code, errors = refused(tmp_path, db_url, "undo", "lead-routing")
    assert code == 1 and "nothing to undo" in errors
    code, errors = refused(tmp_path, db_url, "set", "lead-routing", "east", "--if-match", '"d9"',
                           '{"name": "x"}')  # fmt: skip
    assert code == 1 and 'not "d9"' in errors
    code, errors = refused(tmp_path, db_url, "set", "lead-routing", "east", "--if-match", "v1",
                           '{"name": "x"}')  # fmt: skip
    assert code == 2 and "not a draft ETag" in errors
    code, errors = refused(tmp_path, db_url, "set", "lead-routing", "east", "{not json")
    assert code == 2 and "not valid JSON" in errors
    code, errors = refused(tmp_path, db_url, "set", "lead-routing", "east", '{"id": "y"}')
    assert code == 2 and "rename" in errors
    code, errors = refused(tmp_path, db_url, "add-node", "lead-routing", '{"id": "east"}')
    assert code == 1 and "already has a node" in errors
    code, errors = refused(tmp_path, db_url, "patch", "lead-routing",
                           '[{"op": "remove", "path": "/definition/nodes/99"}]')  # fmt: skip
    assert code == 2 and "operation 0" in errors
    draft(tmp_path, db_url, "add-node", "lead-routing", '{"id": "odd", "type": "no_such_type"}')
    code, errors = refused(tmp_path, db_url, "publish", "lead-routing")
    assert code == 1 and "problem" in errors.splitlines()[0]
    assert "/definition/nodes/" in errors  # every problem, one indented line each
    # Audited as the API audits a refused publish (it was not audited at all).
    [entry] = await container.admin.list_audit(action="draft.publish")
    assert (entry.outcome, entry.detail, entry.target_type, entry.source_ip) == (
        "conflict",
        {"status": 409},
        "workflow",
        "cli",
    )
    assert entry.actor.startswith("cli:")
    draft(tmp_path, db_url, "discard", "lead-routing", "--if-match", '"d2"')
    code, errors = refused(tmp_path, db_url, "history", "lead-routing")
    assert code == 1 and "has no draft" in errors


async def test_publish_after_a_save_needs_force_and_an_unchanged_one_makes_no_version(
    tmp_path: Path, container: Container, db_url: str
) -> None:
    record, _ = await container.service.create_workflow(lead_routing())
    draft(tmp_path, db_url, "open", "lead-routing")
    await container.service.update_workflow(
        record.id, {**lead_routing(), "description": "saved since"}, "bob"
    )
    draft(tmp_path, db_url, "set", "lead-routing", "east", '{"name": "E"}')
    code, errors = refused(tmp_path, db_url, "publish", "lead-routing")
    assert code == 1 and "opened from version 1" in errors and "version 2" in errors
    forced = draft(tmp_path, db_url, "publish", "lead-routing", "--force")
    assert (forced["version"], forced["created"]) == (3, True)
    draft(tmp_path, db_url, "open", "lead-routing")
    same = draft(tmp_path, db_url, "publish", "lead-routing")
    assert (same["version"], same["created"]) == (3, False)
    outcomes = [e.outcome for e in await container.admin.list_audit(action="draft.publish")]
    assert outcomes == ["success", "success", "conflict"]
