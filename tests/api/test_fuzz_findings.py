"""Regressions found by schemathesis (``make fuzz``)."""

from __future__ import annotations

import httpx

from flowyard.api import create_app
from flowyard.bootstrap import Container
from support.auth import auth_headers

WAITS = {
    "name": "waits",
    "start": "s",
    "nodes": [
        {"id": "s", "type": "trigger", "next": "h"},
        {"id": "h", "type": "wait_for_signal", "config": {"signal": "x"}},
    ],
}


async def test_out_of_range_integers_and_non_json_payloads_are_4xx(container: Container) -> None:
    app = create_app(container.settings, container=container)
    record, _, _ = await container.service.save_workflow(WAITS)
    run, _ = await container.service.start_run(record.id, {})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = await auth_headers(container)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        text = await c.post(
            f"/api/v1/runs/{run.id}/signals/x",
            content=b"null",
            headers={"Content-Type": "text/plain"},
        )
        assert text.status_code == 415, text.text
        huge = 10**30
        for path in (
            f"/api/v1/workflows/waits/versions/{huge}",
            f"/api/v1/workflows/waits/versions/{huge}/diff/1",
            f"/api/v1/runs/{run.id}/events?cursor={huge}",
            f"/api/v1/runs/{run.id}/signals?cursor={huge}",
        ):
            assert (await c.get(path)).status_code == 422, path
        pinned = await c.post("/api/v1/workflows/waits/runs", json={"version": huge})
        assert pinned.status_code == 422
        weird = await c.post("/api/v1/workflows", json={"¹": 1, "name": "x"})
        assert weird.status_code == 422
