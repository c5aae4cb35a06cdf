"""Draft changes on the global stream (decision 0030): one editor edits, another editor's
``WS /stream`` receives each change with the draft's new ETag, over real sockets: two app
instances (two containers, two servers) on one database, PostgreSQL (NOTIFY) or SQLite (the
change feed, decision 0037)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from drafts.test_api import lead_routing
from flowyard.domain.auth import Role
from flowyard.domain.drafts import DraftChange, DraftEvent
from flowyard.domain.ids import WorkflowId
from flowyard.settings import Settings
from stream.live import Live, WsUrl, collect, live_app, open_ws
from support.auth import token_for
from support.harness import eventually

DRAFT = "/workflows/lead-routing/draft"


@contextlib.asynccontextmanager
async def two_editors(settings: Settings) -> AsyncIterator[tuple[Live, Live]]:
    """(the watcher's server, the editor's server): two API processes on one database."""
    async with live_app(settings) as watcher, live_app(settings) as editor:
        yield watcher, editor


async def following(live: Live, ws: ClientConnection, count: int = 1) -> None:
    """Wait until ``count`` streams of ``live`` follow draft events (a draft event is live
    only: one sent before the stream subscribed is not replayed)."""
    hub = live.app.state.container.service.changes
    await eventually(lambda: hub.subscribers >= count, "the stream to follow drafts")


def ok(response: httpx.Response) -> str:
    assert response.status_code in (200, 201), response.text
    return response.headers["ETag"]


async def test_every_draft_change_reaches_the_other_editors_stream(settings: Settings) -> None:
    async with two_editors(settings) as (watcher, editor):
        http = editor.http
        assert (await http.post("/workflows", json=lead_routing())).status_code == 201
        # The watcher only reads: a viewer sees the drafts' changes.
        viewer = await token_for(watcher.app.state.container, "vera", Role.VIEWER)
        url = WsUrl(watcher.ws("/stream?kind=drafts"), viewer)
        async with open_ws(url) as ws:
            await following(watcher, ws)
            opened = ok(await http.post(DRAFT))
            log = {"id": "x", "type": "log", "config": {"message": "token-sekrit"}}
            node = {"node": log, "after": "new_lead"}
            added = ok(await http.post(f"{DRAFT}/nodes", headers={"If-Match": opened}, json=node))
            undone = ok(await http.post(f"{DRAFT}/undo", headers={"If-Match": added}))
            redone = ok(await http.post(f"{DRAFT}/redo", headers={"If-Match": undone}))
            published = await http.post(f"{DRAFT}/publish", headers={"If-Match": redone})
            assert published.status_code == 201, published.text
            reopened = ok(await http.post(DRAFT))
            discarded = await http.delete(DRAFT, headers={"If-Match": reopened})
            assert discarded.status_code == 204
            got = (await collect(ws, count=7, timeout_s=20)).events

    workflow_id = published.json()["workflow"]["id"]
    assert [(e["type"], e["data"]["change"], e["data"]["etag"]) for e in got] == [
        ("draft.changed", "opened", opened),
        ("draft.changed", "edited", added),
        ("draft.changed", "undone", undone),
        ("draft.changed", "redone", redone),
        ("draft.published", "published", None),
        ("draft.changed", "opened", reopened),
        ("draft.changed", "discarded", None),
    ]
    assert {e["workflow_id"] for e in got} == {workflow_id}
    assert {e["actor"] for e in got} == {"user:stream-tester"}
    assert [(e["data"]["undo_depth"], e["data"]["redo_depth"]) for e in got[:4]] == [
        (0, 0),
        (1, 0),
        (0, 1),
        (1, 0),
    ]
    assert got[1]["data"]["summary"] == "add node x after new_lead"
    assert got[4]["data"]["version"] == 2
    # A summary, never the document: the node's values are not on the stream.
    assert "token-sekrit" not in json.dumps(got)
    assert all("id" not in e and "run_id" not in e for e in got)


async def test_draft_events_are_filtered_like_run_events(settings: Settings) -> None:
    async with two_editors(settings) as (watcher, editor):
        http = editor.http
        other = {**lead_routing(), "name": "other"}
        assert (await http.post("/workflows", json=other)).status_code == 201
        created = await http.post("/workflows", json=lead_routing())
        workflow_id = created.json()["workflow"]["id"]
        streams = {
            "one workflow": f"/stream?workflow_id={workflow_id}",
            "runs only": "/stream?kind=runs",
            "a run status": "/stream?status=pending",
        }
        async with contextlib.AsyncExitStack() as stack:
            ws: dict[str, Any] = {}
            for name, path in streams.items():
                ws[name] = await stack.enter_async_context(open_ws(watcher.ws(path)))
            await following(watcher, ws["one workflow"])
            ok(await http.post("/workflows/other/draft"))  # filtered out by the first
            ok(await http.post(DRAFT))
            started = await http.post(f"/workflows/{workflow_id}/runs", json={"input": {}})
            assert started.status_code == 202, started.text
            first = {
                name: (await collect(w, count=1, timeout_s=20)).events[0] for name, w in ws.items()
            }

    assert first["one workflow"]["type"] == "draft.changed"
    assert first["one workflow"]["workflow_id"] == workflow_id
    # Streams of runs only, and of runs in a status, see the run before any draft change.
    assert first["runs only"]["type"] == "run.created"
    assert first["a run status"]["type"] == "run.created"


def test_a_draft_event_travels_as_json_and_nothing_else_is_taken_for_one() -> None:
    event = DraftEvent(
        workflow_id=WorkflowId("wf_1"),
        workflow="lead-routing",
        change=DraftChange.PUBLISHED,
        etag=None,
        summary="x" * 2000,
        actor="user:ann",
        undo_depth=0,
        redo_depth=0,
        at=datetime(2026, 12, 1, tzinfo=UTC),
        version=3,
    )
    back = DraftEvent.from_json(event.to_json())
    assert back == replace(event, summary="x" * 500)
    assert back.type == "draft.published"
    for garbage in ("[]", "{}", '{"workflow_id": 1}', event.to_json().replace('"user:ann"', "7")):
        with pytest.raises(ValueError):
            DraftEvent.from_json(garbage)
