"""/credentials over HTTP: write-only (masked reads), roles, problems, versions, audit, and
workflows that reference credentials."""

from __future__ import annotations

import json
from typing import Any

import httpx

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.auth import auth_headers

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
SECRET = "sk-live-9f8e7d6c5b4a"
BEARER = {
    "name": "crm",
    "type": "bearer",
    "description": "CRM",
    "data": {"token": SECRET},
    "allowed_origins": ["https://crm.example.com"],
}
SMTP = {
    "name": "mail",
    "type": "smtp",
    "data": {"host": "smtp.example.com", "username": "robot", "password": SECRET + "-smtp"},
}


def http_workflow(credential: str) -> dict[str, Any]:
    return {
        "name": "calls",
        "start": "call",
        "nodes": [
            {"id": "call", "type": "http", "config": {"url": "http://x", "credential": credential}}
        ],
    }


async def test_create_and_read_are_masked(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)
    made = await anon.post(f"{API}/credentials", json=BEARER, headers=admin)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["data"] == {"token": "********"}
    assert body["allowed_origins"] == ["https://crm.example.com"]
    assert body["name"] == "crm" and body["type"] == "bearer" and body["version"] == 1
    assert body["created_by"] == "user:admin" and body["key_id"]
    assert made.headers["location"] == f"{API}/credentials/crm"
    smtp = await anon.post(f"{API}/credentials", json=SMTP, headers=admin)
    assert smtp.json()["data"] == {
        "host": "smtp.example.com",
        "port": 587,
        "username": "robot",
        "password": "********",
        "starttls": True,
    }

    editor = await auth_headers(container, "ed", Role.EDITOR)
    got = await anon.get(f"{API}/credentials/crm", headers=editor)
    assert got.status_code == 200 and got.json()["data"] == {"token": "********"}
    listed = await anon.get(f"{API}/credentials", headers=editor)
    assert [c["name"] for c in listed.json()["items"]] == ["crm", "mail"]
    for response in (made, smtp, got, listed):
        assert SECRET not in response.text


async def test_list_pages_and_filters(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)
    for n in range(5):
        body = {"name": f"c{n}", "type": "bearer" if n % 2 else "basic"}
        body["data"] = {"token": "t-123456"} if n % 2 else {"username": "u", "password": "p-123456"}
        body["allowed_origins"] = ["https://x.example"]
        assert (await anon.post(f"{API}/credentials", json=body, headers=admin)).status_code == 201
    page = (await anon.get(f"{API}/credentials", params={"limit": 2}, headers=admin)).json()
    assert [c["name"] for c in page["items"]] == ["c0", "c1"] and page["next_cursor"] == "c1"
    rest = await anon.get(f"{API}/credentials", params={"limit": 10, "cursor": "c1"}, headers=admin)
    assert [c["name"] for c in rest.json()["items"]] == ["c2", "c3", "c4"]
    assert rest.json()["next_cursor"] is None
    bearers = await anon.get(f"{API}/credentials", params={"type": "bearer"}, headers=admin)
    assert [c["name"] for c in bearers.json()["items"]] == ["c1", "c3"]
    bad = await anon.get(f"{API}/credentials", params={"type": "nope"}, headers=admin)
    assert bad.status_code == 422


async def test_roles(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)
    await anon.post(f"{API}/credentials", json=BEARER, headers=admin)
    editor = await auth_headers(container, "ed", Role.EDITOR)
    operator = await auth_headers(container, "op", Role.OPERATOR)
    assert (await anon.get(f"{API}/credentials", headers=editor)).status_code == 200
    assert (await anon.get(f"{API}/credential-types", headers=editor)).status_code == 200
    for method, path, body in [
        ("POST", f"{API}/credentials", {**BEARER, "name": "x"}),
        ("PUT", f"{API}/credentials/crm", {"description": "x"}),
        ("DELETE", f"{API}/credentials/crm", None),
    ]:
        response = await anon.request(method, path, json=body, headers=editor)
        assert response.status_code == 403, (method, path)
    for path in (f"{API}/credentials", f"{API}/credentials/crm", f"{API}/credential-types"):
        assert (await anon.get(path, headers=operator)).status_code == 403
        assert (await anon.get(path)).status_code == 401


async def test_problems(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)
    assert (await anon.post(f"{API}/credentials", json=BEARER, headers=admin)).status_code == 201

    again = await anon.post(f"{API}/credentials", json=BEARER, headers=admin)
    assert again.status_code == 409 and again.headers["content-type"].startswith(PROBLEM_JSON)
    assert again.json()["type"].endswith("/conflict")

    missing = await anon.get(f"{API}/credentials/nope", headers=admin)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/not-found")
    for method in ("PUT", "DELETE"):
        body = {"description": "x"} if method == "PUT" else None
        gone = await anon.request(method, f"{API}/credentials/nope", json=body, headers=admin)
        assert gone.status_code == 404

    cases: list[tuple[dict[str, Any], str]] = [
        ({**BEARER, "name": "t2", "type": "kerberos"}, "/type"),
        ({**BEARER, "name": "Bad Name"}, "/name"),
        ({**BEARER, "name": "t3", "data": {"token": ""}}, "/data/token"),
        ({**BEARER, "name": "t4", "data": {"token": "x-123456", "leak": SECRET}}, "/data/leak"),
        ({**BEARER, "name": "t5", "data": {"username": "u", "password": SECRET}}, "/data/token"),
        ({**BEARER, "name": "t6", "extra": 1}, "/extra"),
    ]
    for body, pointer in cases:
        response = await anon.post(f"{API}/credentials", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert pointer in [e["pointer"] for e in response.json()["errors"]], response.text
        assert SECRET not in response.text

    empty = await anon.put(f"{API}/credentials/crm", json={}, headers=admin)
    assert empty.status_code == 422
    wrong = await anon.put(
        f"{API}/credentials/crm", json={"data": {"password": SECRET}}, headers=admin
    )
    assert wrong.status_code == 422 and SECRET not in wrong.text


async def test_update_bumps_the_version(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)
    await anon.post(f"{API}/credentials", json=BEARER, headers=admin)
    new = await anon.put(
        f"{API}/credentials/crm", json={"data": {"token": "new-token"}, "version": 1}, headers=admin
    )
    assert new.status_code == 200 and new.json()["version"] == 2
    assert new.json()["data"] == {"token": "********"} and new.json()["description"] == "CRM"
    stale = await anon.put(
        f"{API}/credentials/crm", json={"description": "x", "version": 1}, headers=admin
    )
    assert stale.status_code == 409 and stale.json()["current_version"] == 2
    cleared = await anon.put(f"{API}/credentials/crm", json={"description": None}, headers=admin)
    assert cleared.json()["description"] is None and cleared.json()["version"] == 3
    resolved = await container.credential_resolver.get("crm")
    assert resolved.values == {"token": "new-token"}
    deleted = await anon.delete(f"{API}/credentials/crm", headers=admin)
    assert deleted.status_code == 204
    assert (await anon.get(f"{API}/credentials/crm", headers=admin)).status_code == 404


async def test_credential_types_describe_their_data(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    types = (await anon.get(f"{API}/credential-types", headers=admin)).json()
    by_type = {t["type"]: t["data_schema"] for t in types}
    assert set(by_type) == {
        "salesforce_oauth", "smtp", "api_key_header", "basic", "bearer", "twilio", "sendgrid",
        "meta_graph", "slack", "webhook_secret", "custom",
    }  # fmt: skip
    password = by_type["basic"]["properties"]["password"]
    assert password["writeOnly"] is True and password["format"] == "password"
    spec = (await anon.get("/openapi.json")).json()
    assert "/api/v1/credentials/{name}" in spec["paths"]
    create = spec["paths"]["/api/v1/credentials"]["post"]
    assert {"409", "422"} <= set(create["responses"])


async def test_audit_names_credentials_and_never_holds_a_secret(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    made = (await anon.post(f"{API}/credentials", json=BEARER, headers=admin)).json()
    await anon.post(f"{API}/credentials", json=BEARER, headers=admin)  # 409
    await anon.put(f"{API}/credentials/crm", json={"data": {"token": SECRET + "2"}}, headers=admin)
    await anon.delete(f"{API}/credentials/crm", headers=admin)
    audit = await anon.get(
        f"{API}/audit", params={"target": "credential:" + made["id"]}, headers=admin
    )
    got = [(e["action"], e["outcome"]) for e in audit.json()["items"]]
    assert got[::-1] == [
        ("credential.create", "success"),
        ("credential.update", "success"),
        ("credential.delete", "success"),
    ]
    everything = await anon.get(f"{API}/audit", params={"limit": 500}, headers=admin)
    actions = {e["action"] for e in everything.json()["items"]}
    assert {"credential.create", "credential.update", "credential.delete"} <= actions
    assert SECRET not in everything.text


async def test_workflows_may_only_reference_existing_credentials(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    refused = await anon.post(f"{API}/workflows", json=http_workflow("crm"), headers=admin)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/invalid-definition")
    assert refused.json()["errors"] == [
        {
            "pointer": "/nodes/0/config/credential",
            "message": "no credential named 'crm'",
            "code": "unknown_credential",
        }
    ]
    bad_name = await anon.post(f"{API}/workflows", json=http_workflow("No Way"), headers=admin)
    assert bad_name.status_code == 422
    assert bad_name.json()["errors"][0]["pointer"] == "/nodes/0/config/credential"

    await anon.post(f"{API}/credentials", json=BEARER, headers=admin)
    saved = await anon.post(f"{API}/workflows", json=http_workflow("crm"), headers=admin)
    assert saved.status_code == 201, saved.text
    # A new version is checked too.
    update = http_workflow("gone")
    response = await anon.put(f"{API}/workflows/calls", json=update, headers=admin)
    assert response.status_code == 422
    assert json.loads(response.text)["errors"][0]["code"] == "unknown_credential"
