"""The audit log: who did what to which target, from where, with which outcome; and secrets
never reach the database text or the logs."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from flowyard.api import create_app
from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.store import normalize_url
from flowyard.store.schema import metadata
from support.auth import PASSWORD, auth_headers

API = "/api/v1"
HELLO = {
    "name": "hello",
    "start": "start",
    "nodes": [{"id": "start", "type": "trigger", "next": "done"}, {"id": "done", "type": "end"}],
}


async def audit(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[Any]:
    response = await client.get(f"{API}/audit", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_create_start_cancel_are_audited_with_actor_and_ip(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    created = await anon.post(f"{API}/workflows", json=HELLO, headers=admin)
    workflow_id = created.json()["workflow"]["id"]
    run = await anon.post(f"{API}/workflows/hello/runs", json={"input": {}}, headers=admin)
    run_id = run.json()["id"]
    assert (await anon.post(f"{API}/runs/{run_id}/cancel", headers=admin)).status_code == 200
    assert (await anon.post(f"{API}/runs/{run_id}/cancel", headers=admin)).status_code == 409
    await anon.post(f"{API}/workflows", json=HELLO)  # 401
    viewer = await auth_headers(container, "vic", Role.VIEWER)
    await anon.post(f"{API}/workflows", json=HELLO, headers=viewer)  # 403

    entries = await audit(anon, admin)
    got = [
        (e["action"], e["actor"], e["target_type"], e["target_id"], e["outcome"]) for e in entries
    ]
    assert got[::-1] == [
        ("workflow.create", "user:admin", "workflow", workflow_id, "success"),
        ("run.start", "user:admin", "run", run_id, "success"),
        ("run.cancel", "user:admin", "run", run_id, "success"),
        ("run.cancel", "user:admin", "run", run_id, "conflict"),
        ("workflow.create", "anonymous", "workflow", None, "unauthenticated"),
        ("workflow.create", "user:vic", "workflow", None, "forbidden"),
    ]
    assert {e["source_ip"] for e in entries} == {"127.0.0.1"}
    assert entries[0]["detail"] == {"status": 403}

    # Filters and cursor paging.
    assert len(await audit(anon, admin, actor="user:vic")) == 1
    assert len(await audit(anon, admin, action="run.cancel")) == 2
    assert len(await audit(anon, admin, target=f"run:{run_id}")) == 3
    page = (await anon.get(f"{API}/audit", params={"limit": 4}, headers=admin)).json()
    rest = await audit(anon, admin, cursor=page["next_cursor"])
    assert [e["id"] for e in page["items"] + rest] == [e["id"] for e in entries]
    assert await audit(anon, admin, since="2999-01-01T00:00:00") == []


async def test_change_and_audit_commit_together(
    anon: httpx.AsyncClient, container: Container
) -> None:
    """A create refused by the store leaves no success entry; one entry per request."""
    admin = await auth_headers(container)
    await anon.post(f"{API}/users", json={"username": "x", "password": PASSWORD}, headers=admin)
    again = await anon.post(
        f"{API}/users", json={"username": "x", "password": PASSWORD}, headers=admin
    )
    assert again.status_code == 409
    entries = await audit(anon, admin, action="user.create")
    assert [e["outcome"] for e in entries] == ["conflict", "success"]
    assert entries[1]["target_id"] == (await container.store.get_user_by_name("x")).id


async def test_secrets_never_reach_the_database_or_logs(
    anon: httpx.AsyncClient, container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = await auth_headers(container)
    secret_password = "S3cret-password-of-frank"
    made = await anon.post(
        f"{API}/users",
        json={"username": "frank", "password": secret_password, "role": "editor"},
        headers=admin,
    )
    assert made.status_code == 201
    await anon.post(f"{API}/auth/token", data={"username": "frank", "password": secret_password})
    await anon.post(
        f"{API}/auth/token", data={"username": "frank", "password": "wrong-" + secret_password}
    )
    user_id = made.json()["id"]
    await anon.patch(
        f"{API}/users/{user_id}", json={"password": secret_password + "2"}, headers=admin
    )
    key = (await anon.post(f"{API}/api-keys", json={"name": "k"}, headers=admin)).json()["key"]
    key_secret = key.rsplit("_", 1)[-1] if key.count("_") == 2 else key.split("_", 2)[2]
    await anon.get(f"{API}/runs", headers={"X-API-Key": key})

    engine = create_async_engine(normalize_url(container.settings.db_url))
    try:
        async with engine.connect() as conn:
            text = ""
            for table in metadata.sorted_tables:
                rows = (await conn.execute(sa.select(table))).all()
                text += repr(rows)
    finally:
        await engine.dispose()
    assert "frank" in text  # the dump is real
    for secret in (secret_password, key_secret, key):
        assert secret not in text
        assert secret not in caplog.text


async def test_source_ip_is_the_client_behind_a_trusted_proxy(container: Container) -> None:
    """The audit names the client exactly as the rate limits do (``trusted_proxies``)."""
    admin = await auth_headers(container)
    forwarded = {**admin, "X-Forwarded-For": "198.51.100.23, 10.0.0.9"}
    ips = []
    for trusted in (["127.0.0.1", "10.0.0.0/8"], []):
        settings = container.settings.model_copy(update={"trusted_proxies": trusted})
        app = create_app(settings, container=container)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            made = await c.post(f"{API}/workflows/validate", json=HELLO, headers=forwarded)
            assert made.status_code == 200, made.text
            [entry] = await audit(c, admin, action="workflow.validate", limit=1)
            ips.append(entry["source_ip"])
    # Behind the trusted proxies: the right-most untrusted hop; else the peer itself.
    assert ips == ["198.51.100.23", "127.0.0.1"]
