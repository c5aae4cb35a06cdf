"""A campaign's limits on SQLite and PostgreSQL (decision 0032): steps in flight for the
whole campaign and per concurrency key, kept as quotas every worker shares; never exceeded
by 16 worker tasks; bad limits are refused with every problem named, nothing started."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx

from flowyard.bootstrap import Container
from flowyard.campaigns.items import ItemFormat
from flowyard.domain.quotas import campaign_item_key, campaign_key
from flowyard.domain.statuses import RunStatus
from flowyard.service import LimitsSpec
from quotas.helpers import run_workers
from support.http import Recorded, RecordingServer, Reply

API = "/api/v1"
TENANTS = ("acme", "globex", "initech")
#: How long the provider takes to answer: long enough for 16 worker tasks to overlap.
ANSWER_S = 0.15


class InFlight:
    """The most requests the provider had in flight at once, in all and per tenant."""

    def __init__(self, server: RecordingServer) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.calls = 0
        self._lock = threading.Lock()
        for tenant in TENANTS:
            server.on(f"/t/{tenant}", self._handler(tenant))

    def _handler(self, tenant: str) -> Any:
        def handle(_: Recorded) -> Reply:
            with self._lock:
                self.calls += 1
                for key in (tenant, "*"):
                    self.now[key] += 1
                    self.most[key] = max(self.most[key], self.now[key])
            time.sleep(ANSWER_S)
            with self._lock:
                for key in (tenant, "*"):
                    self.now[key] -= 1
            return Reply(200, {"ok": True})

        return handle


def workflow(url: str) -> dict[str, Any]:
    return {
        "name": "per-tenant",
        "start": "call",
        "nodes": [{"id": "call", "type": "http", "config": {"url": url + "/t/{{ input.tenant }}"}}],
    }


async def test_limits_per_campaign_and_per_key_are_never_exceeded(
    container: Container, http_server: RecordingServer
) -> None:
    seen = InFlight(http_server)
    await container.service.save_workflow(workflow(http_server.url))
    items = [{"tenant": TENANTS[i % 3], "i": i} for i in range(18)]
    campaign, created = await container.service.start_campaign(
        "per-tenant",
        "limited",
        ItemFormat.JSON,
        items,
        limits=LimitsSpec(concurrency=3, key_concurrency=1),
        concurrency_key="{{ item.tenant }}",
    )
    assert created and campaign.concurrency_key == "{{ item.tenant }}"
    whole = await container.store.get_quota(campaign_key(campaign.id))
    assert whole.quota.concurrency == 3 and whole.quota.tokens is None
    per = await container.store.get_quota(campaign_item_key(campaign.id, "acme"))
    assert per.quota.concurrency == 1
    runs = await container.store.list_campaign_runs(campaign.id, limit=100)
    assert {r.limit_key for r in runs} == {campaign_item_key(campaign.id, t) for t in TENANTS}

    await run_workers([container], [r.id for r in runs], workers=2, concurrency=8, timeout_s=60)

    assert seen.calls == 18
    assert all(seen.most[t] == 1 for t in TENANTS), seen.most  # one per tenant at a time
    assert 2 <= seen.most["*"] <= 3, seen.most  # never over 3; the limit was used
    counts = await container.store.count_campaign_runs(campaign.id)
    assert counts[RunStatus.SUCCEEDED] == 18


async def test_without_limits_the_same_load_overlaps(
    container: Container, http_server: RecordingServer
) -> None:
    """The check above can fail: the same campaign without limits has more in flight."""
    seen = InFlight(http_server)
    await container.service.save_workflow(workflow(http_server.url))
    items = [{"tenant": TENANTS[i % 3], "i": i} for i in range(18)]
    campaign, _ = await container.service.start_campaign(
        "per-tenant", "free", ItemFormat.JSON, items
    )
    runs = await container.store.list_campaign_runs(campaign.id, limit=100)
    assert {r.limit_key for r in runs} == {None}
    await run_workers([container], [r.id for r in runs], workers=2, concurrency=8, timeout_s=60)
    assert seen.most["*"] > 3 and max(seen.most[t] for t in TENANTS) > 1, seen.most


async def test_bad_limits_are_refused_with_every_problem(api_client: httpx.AsyncClient) -> None:
    answer = await api_client.post(
        f"{API}/workflows",
        json={"name": "noop", "start": "a", "nodes": [{"id": "a", "type": "end"}]},
    )
    assert answer.status_code == 201, answer.text
    body = {"workflow": "noop", "name": "c", "items": [{"tenant": "a"}]}
    bad = [
        ({"limits": {"rate": "fast"}}, "/limits/rate"),
        ({"limits": {"key_concurrency": 2}}, "/concurrency_key"),
        ({"concurrency_key": "{{ item.tenant }}"}, "/limits"),
        ({"limits": {"key_rate": "1/s"}, "concurrency_key": "{{ nope"}, "/concurrency_key"),
    ]
    for extra, pointer in bad:
        answer = await api_client.post(f"{API}/campaigns", json={**body, **extra})
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert pointer in [e["pointer"] for e in answer.json()["errors"]], answer.json()
    answer = await api_client.post(f"{API}/campaigns", json={**body, "limits": {"concurrency": 0}})
    assert answer.status_code == 422
    answer = await api_client.post(f"{API}/campaigns", json={**body, "priority": 10, "weight": 0})
    assert answer.status_code == 422
    assert (await api_client.get(f"{API}/campaigns")).json()["items"] == []
    # And a good one, with the NDJSON body's flat query fields.
    answer = await api_client.post(
        f"{API}/campaigns",
        content=b'{"tenant": "a"}\n{"tenant": "b"}\n',
        params={
            "workflow": "noop",
            "name": "lines",
            "priority": "5",
            "weight": "2",
            "key_rate": "5/s",
            "concurrency_key": "{{ item.tenant }}",
        },
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 201, answer.text
    shown = answer.json()
    assert (shown["priority"], shown["weight"]) == (5, 2)
    assert shown["concurrency_key"] == "{{ item.tenant }}"
    # Per-key quotas are read by their key; the list leaves them out (there may be many).
    per_key = campaign_item_key(shown["id"], "a")
    one = await api_client.get(f"{API}/quotas/{per_key}")
    assert one.status_code == 200 and one.json()["key"] == per_key, one.text
    quotas = (await api_client.get(f"{API}/quotas")).json()
    assert per_key not in {q["key"] for q in quotas["items"]}
