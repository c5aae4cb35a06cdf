"""Streams end cleanly: after sessions closed in every way, no session task and no hub task
is left in the server's event loop (issue 9: 11 tasks stuck after 10 sessions)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from live import Live, chain, collect, live_app, open_ws, protocols, start, stream_all
from test_stream import app_settings
from websockets.asyncio.client import connect

from flowyard.api.stream import StreamFilter, StreamHub, StreamSession
from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import NewRun
from flowyard.store import Store
from support.auth import PASSWORD, token_for

#: Task names of a stream session (``stream-produce`` ...) and of the hub.
STREAM_TASKS = ("stream-", "flowyard-stream-hub")


def stream_tasks() -> list[str]:
    """Names of the stream tasks alive in this event loop (the server runs in it too)."""
    return sorted(
        t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(STREAM_TASKS)
    )


async def settled(timeout_s: float = 10.0) -> list[str]:
    """The stream tasks still alive once they had ``timeout_s`` to end (empty when clean)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (left := stream_tasks()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return left


class StuckSocket:
    """A client that never reads: every send blocks; it never leaves by itself."""

    def __init__(self) -> None:
        self.closed: int | None = None

    async def send_text(self, data: str) -> None:
        await asyncio.Event().wait()

    async def receive(self) -> MutableMapping[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = code


def container_of(live: Live) -> Container:
    container: Container = live.app.state.container
    return container


async def backlog(live: Live, runs: int) -> str:
    """A workflow with ``runs`` runs that nothing executes, started in one batch (the rows and
    ``run.created`` events one API start each writes: 100 POSTs cost seconds of setup)."""
    workflow_id, _ = await start(live, chain("backlog", steps=3), runs=0)
    container = container_of(live)
    new_runs = [
        NewRun(WorkflowId(workflow_id), 1, "start", "trigger", {"i": i}) for i in range(runs)
    ]
    created = await container.store.start_runs(new_runs, container.clock())
    assert [was_created for _, was_created in created] == [True] * runs
    return workflow_id


async def test_no_stream_task_outlives_clients_leaving_mid_stream(tmp_path: Path) -> None:
    # The producer is busy filling the queue from a backlog when the client leaves: the
    # moment a cancellation used to be lost.
    settings = app_settings(f"sqlite:///{tmp_path / 'f.db'}", workers=0)
    async with live_app(settings) as live:
        await backlog(live, 100)
        rng = random.Random(9)
        url = live.ws("/stream")
        for _ in range(10):
            # Unbounded client buffer: the client sees the server's close reply at once.
            async with connect(url, subprotocols=protocols(url), max_queue=None) as ws:
                await collect(ws, count=rng.randint(1, 60), timeout_s=10)
        left = await settled()
    assert left == []


async def test_no_stream_task_is_left_after_sessions_closed_in_every_way(tmp_path: Path) -> None:
    settings = app_settings(
        f"sqlite:///{tmp_path / 'f.db'}",
        workers=1,
        stream_reauth_interval_s=0.1,
        stream_auth_timeout_s=0.2,
    )
    async with live_app(settings) as live:
        container = container_of(live)
        codes: dict[str, list[int | None]] = {}

        # The client leaves (a clean close, and a dropped connection).
        for _ in range(3):
            async with open_ws(live.ws("/stream")) as ws:
                await asyncio.sleep(0.05)
            ws = await connect(live.ws("/stream"), subprotocols=protocols(live.ws("/stream")))
            await asyncio.sleep(0.05)
            ws.transport.abort()

        # Authentication refused; no token in time; the client leaves before its token.
        refused = live.ws("/stream")
        refused.token = "not-a-token"
        codes["refused"] = [(await stream_all(refused)).close_code for _ in range(3)]
        bare = f"ws://127.0.0.1:{live.port}/api/v1/stream"
        silent = []
        for _ in range(3):
            async with connect(bare) as ws:
                silent.append((await collect(ws)).close_code)
            async with connect(bare):
                pass
        codes["silent"] = silent

        # Unknown run; the run ends.
        codes["unknown"] = [
            (await stream_all(live.ws("/runs/run_nope/stream"))).close_code for _ in range(3)
        ]
        _, (run_id,) = await start(live, chain("ends", steps=2))
        codes["ended"] = [
            (await stream_all(live.ws(f"/runs/{run_id}/stream"))).close_code for _ in range(3)
        ]

        # The token expires, or access is withdrawn, while the stream is open.
        # Only the expiring token is short-lived: a slow machine must not let the withdrawn
        # user's token expire before the re-check sees the user disabled (4401, not 1008).
        withdrawn = live.ws("/stream")
        withdrawn.token = await token_for(container, "withdrawn", Role.VIEWER)
        await container.auth.create_user("short-lived", PASSWORD, Role.VIEWER)
        container.auth.access_ttl_s = 1
        expiring = live.ws("/stream")
        expiring.token = await token_for(container, "short-lived", Role.VIEWER)
        async with open_ws(expiring) as ws_expiring, open_ws(withdrawn) as ws_withdrawn:
            user = await container.store.get_user_by_name("withdrawn")
            await container.auth.update_user(user.id, disabled=True)
            codes["withdrawn"] = [(await collect(ws_withdrawn, timeout_s=10)).close_code]
            codes["expired"] = [(await collect(ws_expiring, timeout_s=10)).close_code]

        left = await settled()

    assert left == []
    assert codes == {
        "refused": [4401] * 3,
        "silent": [4401] * 3,
        "unknown": [4404] * 3,
        "ended": [1000] * 3,
        "withdrawn": [1008],
        "expired": [4401],
    }


async def test_no_stream_task_is_left_after_slow_clients_are_dropped(
    store: Store,
) -> None:
    hub = StreamHub(store, store.get_run, poll_interval_s=0.02)
    workflow, _ = await store.create_workflow("w", None, {"name": "w"}, None)
    runs = [NewRun(WorkflowId(workflow.id), 1, "start", "trigger", {"i": i}) for i in range(20)]
    sockets = [StuckSocket() for _ in range(5)]
    sessions = [
        StreamSession(ws, hub, StreamFilter(), after=0, queue_size=2, slow_client_s=0.1)
        for ws in sockets
    ]
    tasks = [asyncio.create_task(s.run()) for s in sessions]
    await store.start_runs(runs, datetime.now(UTC))
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)

    assert [ws.closed for ws in sockets] == [1013] * 5
    assert await settled() == []
