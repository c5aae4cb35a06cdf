"""The seed scenario end to end on both backends: east -> CRM account, else -> general pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowyard.bootstrap import Container
from flowyard.domain.statuses import RunStatus
from support.http import RecordingServer
from support.runs import run_definition

EXAMPLE = Path(__file__).parents[2] / "examples" / "lead_routing_http.json"


def _vars(server: RecordingServer) -> dict[str, str]:
    return {"crm_url": f"{server.url}/crm", "notify_url": f"{server.url}/notify"}


async def _run_to_end(container: Container, region: str, server: RecordingServer) -> str:
    detail = await run_definition(
        container,
        json.loads(EXAMPLE.read_text()),
        {"email": "lead@example.com", "region": region},
        vars=_vars(server),
    )
    assert detail.run.status == RunStatus.SUCCEEDED
    return detail.run.id


@pytest.mark.parametrize(
    ("region", "branch", "crm_path"),
    [("East Coast", "create_account", "/crm/accounts"), ("West", "assign_pool", "/crm/pool")],
)
async def test_lead_routing_takes_the_right_branch(
    container: Container, http_server: RecordingServer, region: str, branch: str, crm_path: str
) -> None:
    run_id = await _run_to_end(container, region, http_server)
    detail = await container.service.get_run(run_id)
    nodes = [s.node_id for s in detail.steps]
    assert nodes == ["new_lead", "is_east", branch, "notify", "done"]
    assert detail.run.output == {
        "email": "lead@example.com",
        "route": "east" if region == "East Coast" else "pool",
    }
    [crm_call] = http_server.to(crm_path)
    assert crm_call.json()["email"] == "lead@example.com"
    assert crm_call.headers["Idempotency-Key"] == f"{run_id}:{branch}:0"
    [notify] = http_server.to("/notify")
    assert notify.json()["route"] == detail.run.output["route"]
    kinds = [e.type for e in detail.events]
    assert kinds[0] == "run.created" and kinds[-1] == "run.succeeded"
    assert kinds.count("step.succeeded") == 5
