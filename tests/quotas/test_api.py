"""/quotas over HTTP: set, read (with the bucket now), change, delete; roles, problems with
pointers, audit entries."""

from __future__ import annotations

from datetime import timedelta

import httpx

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.domain.credentials import CredentialType
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


async def test_a_concurrency_limit_with_or_without_a_rate(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    made = await anon.put(f"{API}/quotas/{KEY}", json={"concurrency": 4}, headers=admin)
    assert made.status_code == 200, made.text
    body = made.json()
    assert (body["concurrency"], body["in_flight"], body["hold_s"]) == (4, 0, 1.0)
    assert (body["rate"], body["tokens"], body["per_s"], body["refill_per_s"]) == (
        None,
        None,
        None,
        0.0,
    )
    both = await anon.put(
        f"{API}/quotas/{KEY}", json={"rate": "100 per 20s", "concurrency": 25}, headers=admin
    )
    assert (both.json()["rate"], both.json()["concurrency"]) == ("100 per 20s", 25)
    rate_again = await anon.put(f"{API}/quotas/{KEY}", json={"rate": "5/s"}, headers=admin)
    assert rate_again.json()["concurrency"] is None
    cases = [
        ({}, "/rate"),
        ({"concurrency": 0}, "/concurrency"),
        ({"concurrency": "many"}, "/concurrency"),
        ({"concurrency": 3, "burst": 2}, "/burst"),
    ]
    for body, pointer in cases:
        response = await anon.put(f"{API}/quotas/{KEY}", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert pointer in [e["pointer"] for e in response.json()["errors"]], response.text
    assert (await anon.get(f"{API}/quotas/{KEY}", headers=admin)).json()["rate"] == "5 per 1s"


async def test_a_credentials_quota_is_managed_on_the_credential(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    editor = await auth_headers(container, "ed", Role.EDITOR)
    await container.credentials.create(
        "crm",
        CredentialType.BEARER,
        {"token": "t0k3n-for-crm"},
        allowed_origins=["https://crm.example"],
    )
    url = f"{API}/credentials/crm/quota"
    assert (await anon.get(url, headers=admin)).status_code == 404
    assert (await anon.get(f"{API}/credentials/crm", headers=admin)).json()["quota"] is None

    made = await anon.put(url, json={"rate": "100 per 20s", "concurrency": 5}, headers=admin)
    assert made.status_code == 200, made.text
    assert (made.json()["key"], made.json()["concurrency"]) == ("credential:crm", 5)
    # One source of truth: the same row as /quotas/credential:crm, shown on the credential.
    by_key = (await anon.get(f"{API}/quotas/credential:crm", headers=admin)).json()
    assert by_key["rate"] == "100 per 20s" and by_key["concurrency"] == 5
    shown = (await anon.get(f"{API}/credentials/crm", headers=editor)).json()
    assert shown["quota"]["key"] == "credential:crm" and shown["quota"]["concurrency"] == 5
    assert (await anon.get(url, headers=editor)).json()["rate"] == "100 per 20s"

    assert (await anon.put(url, json={"concurrency": 2}, headers=editor)).status_code == 403
    assert (await anon.delete(url, headers=editor)).status_code == 403
    bad = await anon.put(url, json={"rate": "often"}, headers=admin)
    assert bad.status_code == 422 and "/rate" in [e["pointer"] for e in bad.json()["errors"]]
    nobody = await anon.put(
        f"{API}/credentials/nobody/quota", json={"concurrency": 2}, headers=admin
    )
    assert nobody.status_code == 404, nobody.text
    assert nobody.headers["content-type"].startswith(PROBLEM_JSON)

    assert (await anon.delete(url, headers=admin)).status_code == 204
    assert (await anon.delete(url, headers=admin)).status_code == 404
    assert (await anon.get(f"{API}/quotas/credential:crm", headers=admin)).status_code == 404
    entries = await container.admin.list_audit(target="quota:credential:crm")
    assert [e.action for e in entries if e.outcome == "success"] == ["quota.delete", "quota.put"]
