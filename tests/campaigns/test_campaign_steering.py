"""Steering a running campaign on SQLite and PostgreSQL: ``PATCH /campaigns/{id}`` changes its
priority, weight and limits; its unfinished steps (scheduled, held, running) take the new
priority by chunks and the steps enqueued after take it too; its quota rows follow; every
refusal is problem+json with a pointer; the change is audited; ``flowyard campaigns set``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from campaigns.test_campaign_wakeups import in_status, step_lanes
from flowyard.bootstrap import Container
from flowyard.campaigns.items import ItemFormat
from flowyard.domain.auth import Role
from flowyard.domain.clock import utc_now
from flowyard.domain.ids import RunId
from flowyard.domain.priorities import BULK, INTERACTIVE
from flowyard.domain.quotas import campaign_item_key, campaign_key
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.service import LimitsSpec, campaign_changes
from support.auth import auth_headers
from support.campaigns import MAILER, WAITER
from support.runs import wait_for_runs

API = "/api/v1"
PROBLEM = "application/problem+json"
TWO_STEPS: dict[str, Any] = {
    "name": "two-steps",
    "start": "first",
    "nodes": [
        {"id": "first", "type": "set", "config": {"values": {"a": 1}}, "next": "second"},
        {"id": "second", "type": "end"},
    ],
}


async def all_steps(container: Container, run_ids: list[str]) -> list[tuple[str, int, str]]:
    rows: list[tuple[str, int, str]] = []
    for run_id in run_ids:
        rows.extend(await step_lanes(container, run_id))
    return rows


async def test_pending_steps_and_later_ones_take_the_new_priority_by_chunks(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(campaign_changes, "CHUNK", 3)  # 7 runs: three chunks
    await container.service.save_workflow(TWO_STEPS)
    campaign, _ = await container.service.start_campaign(
        "two-steps", "steered", ItemFormat.JSON, [{"i": i} for i in range(7)]
    )
    runs = [r.id for r in await container.store.list_campaign_runs(campaign.id, limit=10)]
    # One run paused (its step held), one step claimed (running) before the change.
    await container.service.pause_run(runs[0])
    [claimed] = await container.store.claim_steps("w1", limit=1, now=utc_now(), lease_s=2)
    assert claimed.run_id != runs[0]
    # An interactive run started after the campaign.
    await container.service.save_workflow(MAILER)
    interactive, _ = await container.service.start_run("mailer", {"email": "ada@example.com"})

    changed = await container.service.update_campaign(campaign.id, priority=8, weight=5)
    assert (changed.campaign.priority, changed.campaign.weight) == (8, 5)
    assert changed.steps == 7  # six scheduled (one held) and the running one
    assert {(p, lane) for _, p, lane in await all_steps(container, runs)} == {(8, campaign.id)}
    for run_id in runs:
        assert (await container.store.get_run(RunId(run_id))).priority == 8
    # The campaign is claimed ahead of the interactive run now.
    got = await container.store.claim_steps("w1", limit=1, now=utc_now(), lease_s=2)
    assert [s.lane for s in got] == [campaign.id] and got[0].priority == 8
    # Steps enqueued from now on (the second node of each run) take it too.
    await container.service.resume_run(runs[0])
    await wait_for_runs(container, runs)
    rows = await all_steps(container, runs)
    assert len(rows) == 14 and {(p, lane) for _, p, lane in rows} == {(8, campaign.id)}
    assert {(s.priority, s.lane) for s in await container.store.list_steps(interactive.id)} == {
        (INTERACTIVE, "")
    }


async def test_a_retried_run_takes_the_priority_its_campaign_has_now(
    container: Container,
) -> None:
    failing = {"name": "failing", "start": "boom", "nodes": [{"id": "boom", "type": "fail"}]}
    await container.service.save_workflow(failing)
    campaign, _ = await container.service.start_campaign(
        "failing", "retried", ItemFormat.JSON, [{"i": 1}, {"i": 2}]
    )
    first, second = await container.store.list_campaign_runs(campaign.id, limit=10)
    await container.service.pause_run(second.id)  # keeps the campaign from ending
    await in_status(container, first.id, RunStatus.FAILED)
    await container.service.update_campaign(campaign.id, priority=7)
    # The failed run had ended: the change did not touch it, its retry reads the campaign.
    assert (await container.store.get_run(first.id)).priority == BULK
    retried = await container.service.retry_run(first.id)
    assert retried.priority == 7
    steps = await container.store.list_steps(first.id, status=StepStatus.SCHEDULED)
    assert [s.priority for s in steps] == [7]


async def test_limits_change_the_quota_rows(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(campaign_changes, "CHUNK", 2)
    await container.service.save_workflow(WAITER)
    tenants = ["acme", "globex", "initech"]
    campaign, _ = await container.service.start_campaign(
        "waiter",
        "limited",
        ItemFormat.JSON,
        [{"tenant": t} for t in tenants],
        limits=LimitsSpec(key_concurrency=1),
        concurrency_key="{{ item.tenant }}",
    )
    assert campaign.limits.key_concurrency == 1 and not campaign.limits.whole
    assert await container.store.find_quota(campaign_key(campaign.id)) is None
    patch = {"concurrency": 5, "rate": "10/s", "key_concurrency": 4}
    changed = await container.service.update_campaign(campaign.id, limits=patch)
    assert changed.campaign.limits.as_json() == {
        "concurrency": 5,
        "rate": "10 per 1s",
        "key_concurrency": 4,
        "key_rate": None,
    }
    whole = await container.store.get_quota(campaign_key(campaign.id))
    assert (whole.quota.concurrency, whole.quota.tokens, whole.quota.per_s) == (5, 10, 1.0)
    for tenant in tenants:  # three rows per key, changed by chunks of two
        per = await container.store.get_quota(campaign_item_key(campaign.id, tenant))
        assert per.quota.concurrency == 4
    # A member given null removes that limit; the whole campaign's row goes with the last.
    changed = await container.service.update_campaign(
        campaign.id, limits={"rate": None, "concurrency": None, "key_rate": "1/s"}
    )
    assert changed.campaign.limits.as_json()["key_rate"] == "1 per 1s"
    assert await container.store.find_quota(campaign_key(campaign.id)) is None
    per = await container.store.get_quota(campaign_item_key(campaign.id, "acme"))
    assert (per.quota.concurrency, per.quota.tokens) == (4, 1)


async def save(client: httpx.AsyncClient, definition: dict[str, Any]) -> None:
    answer = await client.post(f"{API}/workflows", json=definition)
    assert answer.status_code == 201, answer.text


def refused(answer: httpx.Response, status: int, pointer: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    if pointer is not None:
        assert pointer in [e["pointer"] for e in answer.json()["errors"]], answer.json()


async def test_patch_over_the_api(api_client: httpx.AsyncClient, container: Container) -> None:
    await save(api_client, WAITER)
    body = {"workflow": "waiter", "name": "c", "items": [{"n": 1}, {"n": 2}]}
    created = await api_client.post(f"{API}/campaigns", json=body)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert created.json()["limits"] == {
        "concurrency": None,
        "rate": None,
        "key_concurrency": None,
        "key_rate": None,
    }
    answer = await api_client.patch(
        f"{API}/campaigns/{cid}",
        content=b'{"priority": 5, "weight": 2, "limits": {"concurrency": 10}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert (shown["priority"], shown["weight"], shown["limits"]["concurrency"]) == (5, 2, 10)
    again = (await api_client.get(f"{API}/campaigns/{cid}")).json()
    assert (again["priority"], again["weight"], again["limits"]["concurrency"]) == (5, 2, 10)
    entries = await container.store.list_audit(action="campaign.update")
    assert [e.target_id for e in entries] == [cid]

    for patch, pointer in [
        ({"priority": 10}, "/priority"),
        ({"weight": 0}, "/weight"),
        ({"priority": None}, "/priority"),
        ({"limits": {"rate": "fast"}}, "/limits/rate"),
        ({"limits": {"concurrency": 0}}, "/limits/concurrency"),
        ({"limits": {"key_concurrency": 2}}, "/limits/key_concurrency"),
        ({"limits": None}, "/limits"),
        ({"name": "other"}, "/name"),
    ]:
        refused(await api_client.patch(f"{API}/campaigns/{cid}", json=patch), 422, pointer)
    refused(await api_client.patch(f"{API}/campaigns/cmp_nope", json={"priority": 4}), 404)
    cancelled = await api_client.post(f"{API}/campaigns/{cid}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    refused(await api_client.patch(f"{API}/campaigns/{cid}", json={"priority": 4}), 409)


async def test_patch_needs_an_operator(api_client: httpx.AsyncClient, container: Container) -> None:
    await container.service.save_workflow(WAITER)
    campaign, _ = await container.service.start_campaign(
        "waiter", "roles", ItemFormat.JSON, [{"n": 1}]
    )
    url = f"{API}/campaigns/{campaign.id}"
    viewer = await auth_headers(container, "vera", Role.VIEWER)
    refused(await api_client.patch(url, json={"priority": 4}, headers=viewer), 403)
    operator = await auth_headers(container, "otto", Role.OPERATOR)
    answer = await api_client.patch(url, json={"priority": 4}, headers=operator)
    assert answer.status_code == 200, answer.text
