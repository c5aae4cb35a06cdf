"""Undo history survives a restart of a real ``flowyard serve`` (issue 14's acceptance): the
draft, its ETag, its depths and its steps are in the SQLite file, and undo and redo work
after the process stopped and a new one started on the same file."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from drafts.test_api import lead_routing
from support.serve import ServeProcess, serve_process

API = "/api/v1"
DRAFT = f"{API}/workflows/lead-routing/draft"


async def _client(server: ServeProcess) -> httpx.AsyncClient:
    await server.wait_ready()
    token = await server.login()
    return httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _done(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return response.headers["ETag"], body


@pytest.mark.slow
async def test_undo_history_survives_a_restart_of_serve(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'drafts.db'}"
    with serve_process(db_url, tmp_path / "first.log") as first:
        async with await _client(first) as http:
            assert (await http.post(f"{API}/workflows", json=lead_routing())).status_code == 201
            tag, body = _done(await http.post(DRAFT))
            states = [json.dumps(body["document"])]
            edits: list[tuple[str, str, Any]] = [
                ("PATCH", "/nodes/east", {"config": None, "name": "East"}),
                ("POST", "/nodes", {"node": {"id": "audit", "type": "log",
                                             "config": {"message": "a"}}, "after": "east"}),
                ("POST", "/edges", {"source": "pool", "target": "done", "kind": "catch"}),
            ]  # fmt: skip
            for method, path, payload in edits:
                tag, body = _done(
                    await http.request(
                        method, DRAFT + path, json=payload, headers={"If-Match": tag}
                    )
                )
                states.append(json.dumps(body["document"]))
            tag, body = _done(await http.post(f"{DRAFT}/undo", headers={"If-Match": tag}))
            assert json.dumps(body["document"]) == states[2]
        first.send(signal.SIGTERM)
        assert await first.wait_exit(30) == 0

    with serve_process(db_url, tmp_path / "second.log") as second:
        async with await _client(second) as http:
            read = await http.get(DRAFT)
            again, body = _done(read)
            assert again == tag
            assert (body["undo_depth"], body["redo_depth"]) == (2, 1)
            assert json.dumps(body["document"]) == states[2]
            history = (await http.get(f"{DRAFT}/history")).json()
            assert [(s["summary"], s["undone"]) for s in history["items"]] == [
                ("connect pool -catch-> done", True),
                ("add node audit after east", False),
                ("update node east (config, name)", False),
            ]
            tag, body = _done(await http.post(f"{DRAFT}/redo", headers={"If-Match": again}))
            assert json.dumps(body["document"]) == states[3]
            for index in (2, 1, 0):  # back to the start, byte for byte
                tag, body = _done(await http.post(f"{DRAFT}/undo", headers={"If-Match": tag}))
                assert json.dumps(body["document"]) == states[index]
            nothing = await http.post(f"{DRAFT}/undo", headers={"If-Match": tag})
            assert nothing.status_code == 409
