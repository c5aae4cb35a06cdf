"""An in-process API client on an existing container (no lifespan, no workers)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from flowyard.api import create_app
from flowyard.bootstrap import Container
from support.auth import auth_headers


@contextlib.asynccontextmanager
async def api_client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """An admin's client of the app mounted on ``container`` (``base_url`` ends in /api/v1)."""
    app = create_app(container=container)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test/api/v1",
        headers=await auth_headers(container),
    ) as client:
        yield client


async def read_everything(client: httpx.AsyncClient, run_id: str) -> dict[str, httpx.Response]:
    """Every read endpoint of a run and its workflow, by name."""
    run = await client.get(f"/runs/{run_id}")
    answers = {"run": run}
    if run.status_code == 200:
        workflow_id = run.json()["workflow_id"]
        version = run.json()["workflow_version"]
        answers.update(
            {
                "workflow": await client.get(f"/workflows/{workflow_id}"),
                "workflows": await client.get("/workflows"),
                "versions": await client.get(f"/workflows/{workflow_id}/versions"),
                "version": await client.get(f"/workflows/{workflow_id}/versions/{version}"),
                "diff": await client.get(
                    f"/workflows/{workflow_id}/versions/{version}/diff/{version}"
                ),
            }
        )
    answers.update(
        {
            "runs": await client.get("/runs"),
            "steps": await client.get(f"/runs/{run_id}/steps"),
            "events": await client.get(f"/runs/{run_id}/events"),
            "signals": await client.get(f"/runs/{run_id}/signals"),
        }
    )
    return answers


def assert_all_ok(answers: dict[str, httpx.Response]) -> None:
    """Every answer is 200 and valid JSON."""
    failed = {
        name: (r.status_code, r.text[:200]) for name, r in answers.items() if r.status_code != 200
    }
    assert failed == {}
    for response in answers.values():
        response.json()
