"""/quotas over HTTP: set, read (with the bucket now), change, delete; roles, problems with
pointers, audit entries."""

from __future__ import annotations

from datetime import timedelta

import httpx

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.auth import auth_headers

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
KEY = "credential:salesforce"


async def test_set_read_change_delete(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)
    made = await anon.put(f"{API}/quotas/{KEY}", json={"rate": "100 per 20s"}, headers=admin)
    assert made.status_code == 200, made.text
    body = made.json()
    assert (body["key"], body["tokens"], body["per_s"], body["burst"]) == (KEY, 100, 20.0, 1)
    assert body["rate"] == "100 per 20s" and body["enabled"] is True
    assert body["refill_per_s"] == 5.0 and body["available"] == 1.0
    assert body["paused_until"] is None and body["queue_until"] is None

    changed = await anon.put(
        f"{API}/quotas/{KEY}", json={"rate": "300 per minute", "burst": 50}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["tokens"], changed.json()["burst"]) == (300, 50)
    assert changed.json()["created_at"] == body["created_at"]

    await anon.put(f"{API}/quotas/node_type:http", json={"rate": "5/s"}, headers=admin)
    listed = await anon.get(f"{API}/quotas", headers=admin)
    assert [q["key"] for q in listed.json()["items"]] == [KEY, "node_type:http"]
    one = await anon.get(f"{API}/quotas/{KEY}", headers=admin)
    assert one.status_code == 200 and one.json()["rate"] == "300 per 60s"

    gone = await anon.delete(f"{API}/quotas/{KEY}", headers=admin)
    assert gone.status_code == 204
    missing = await anon.get(f"{API}/quotas/{KEY}", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM_JSON)
    assert (await anon.delete(f"{API}/quotas/{KEY}", headers=admin)).status_code == 404

    entries = await container.admin.list_audit(target=f"quota:{KEY}")
    assert [(e.action, e.outcome) for e in entries if e.outcome == "success"] == [
        ("quota.delete", "success"),
        ("quota.put", "success"),
        ("quota.put", "success"),
    ]
    assert entries[-1].actor == "user:admin"


async def test_a_paused_bucket_shows_its_pause(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    await anon.put(f"{API}/quotas/{KEY}", json={"rate": "10/s", "burst": 5}, headers=admin)
    until = container.clock() + timedelta(seconds=60)
    await container.store.slow_quota([KEY], until)
    body = (await anon.get(f"{API}/quotas/{KEY}", headers=admin)).json()
    assert body["available"] == 0.0 and body["paused_until"] is not None
    # A step refused now gets the first slot after the pause; the backlog ends a token later.
    retry_at = await container.store.take_quota([KEY], container.clock())
    assert retry_at is not None and retry_at > until
    body = (await anon.get(f"{API}/quotas/{KEY}", headers=admin)).json()
    assert body["queue_until"] is not None


async def test_bad_input_is_a_problem_with_a_pointer(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    cases = [
        ("user:alice", {"rate": "5/s"}, "/key"),
        (KEY, {"rate": "fast"}, "/rate"),
        (KEY, {"rate": "0 per 1s"}, "/rate"),
        (KEY, {"rate": "5/s", "burst": 6}, "/burst"),
    ]
    for key, body, pointer in cases:
        response = await anon.put(f"{API}/quotas/{key}", json=body, headers=admin)
        assert response.status_code == 422, (key, body, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert pointer in [e["pointer"] for e in response.json()["errors"]], response.text
    unknown = await anon.put(f"{API}/quotas/{KEY}", json={"rate": "5/s", "x": 1}, headers=admin)
    assert unknown.status_code == 422
    assert (await anon.get(f"{API}/quotas", headers=admin)).json()["items"] == []


async def test_editors_read_admins_write(anon: httpx.AsyncClient, container: Container) -> None:
    editor = await auth_headers(container, "ed", Role.EDITOR)
    viewer = await auth_headers(container, "vi", Role.VIEWER)
    put = await anon.put(f"{API}/quotas/{KEY}", json={"rate": "5/s"}, headers=editor)
    assert put.status_code == 403
    assert (await anon.get(f"{API}/quotas", headers=editor)).status_code == 200
    assert (await anon.get(f"{API}/quotas", headers=viewer)).status_code == 403
