"""An in-process API client on an existing container (no lifespan, no workers)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from flowyard.api import create_app
from flowyard.bootstrap import Container
from support.auth import auth_headers

#: The base URL of the in-process clients; paths start with /api/v1.
BASE_URL = "http://test"
#: The base URL of clients whose paths are relative to the API root.
API_ROOT = f"{BASE_URL}/api/v1"


@contextlib.asynccontextmanager
async def admin_client(
    container: Container, *, app: FastAPI | None = None, base_url: str = BASE_URL
) -> AsyncIterator[httpx.AsyncClient]:
    """An admin's in-process client of ``app`` (by default a new app mounted on
    ``container``; no lifespan, so no workers of its own). Tests take the ``api_client``
    fixture; this is for one that needs a client after its setup."""
    app = app or create_app(container.settings, container=container)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=base_url,
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
