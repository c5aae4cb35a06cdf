"""The ``salesforce`` node type end to end: real container and worker, real sockets, the
local Salesforce of ``tests/fakes/salesforce.py`` (OAuth token endpoint + REST)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.salesforce import (
    LIMIT_EXCEEDED,
    SERVER_UNAVAILABLE,
    SESSION_EXPIRED,
    FakeSalesforce,
)
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType, ResolvedCredential, parse_data
from flowyard.domain.statuses import RunStatus
from flowyard.integrations.salesforce import SalesforceAuth
from flowyard.outbound import AuthContext, Outbound, provider_origins
from flowyard.service import RunDetail
from flowyard.settings import Settings
from support.dbdump import dump_database
from support.runs import run_definition, wait_for_runs

CLIENT_ID = "3MVG9-connected-app"
CLIENT_SECRET = "cs-9F8E7D6C5B4A3210-secret"
REFRESH_TOKEN = "rt-0A1B2C3D4E5F6789-refresh"
USERNAME = "integration@acme.example"


def _keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


PRIVATE_PEM, PUBLIC_PEM = _keypair()


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: nothing here depends on the backend (the store contract suite covers
    both), and the module stays fast."""
    path = tmp_path / "flowyard.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(db_url: str) -> Settings:
    """The suite's settings, credentials read afresh by every step (an edit is seen at
    once)."""
    return Settings(
        db_url=db_url,
        poll_interval_s=0.05,
        reap_interval_s=0.5,
        workers=0,
        load_plugins=False,
        credential_cache_ttl_s=0,
    )


@pytest.fixture
def fake() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(page_size=10) as sf:
        sf.add_app(
            CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_token=REFRESH_TOKEN,
            public_key=PUBLIC_PEM,
            username=USERNAME,
        )
        yield sf


async def add_credential(
    container: Container,
    fake: FakeSalesforce,
    name: str = "sf",
    *,
    flow: str = "refresh_token",
    allowed_origins: list[str] | None = None,
    **data: Any,
) -> None:
    values: dict[str, Any] = {"instance_url": fake.url, "client_id": CLIENT_ID, "flow": flow}
    values["token_url"] = fake.url
    if flow == "jwt_bearer":
        values.update(private_key=PRIVATE_PEM, username=USERNAME)
    else:
        values["client_secret"] = CLIENT_SECRET
    if flow == "refresh_token":
        values["refresh_token"] = REFRESH_TOKEN
    values.update(data)
    await container.credentials.create(
        name, CredentialType.SALESFORCE_OAUTH, values, allowed_origins=allowed_origins
    )


def sf(node_id: str, operation: str, *, then: str | None = None, **config: Any) -> dict[str, Any]:
    retry = config.pop("retry", {"max_attempts": 1})
    catch = config.pop("catch", None)
    spec: dict[str, Any] = {
        "id": node_id,
        "type": "salesforce",
        "config": {"credential": config.pop("credential", "sf"), "operation": operation, **config},
        "retry": retry,
    }
    if then:
        spec["next"] = then
    if catch:
        spec["catch"] = catch
    return spec


async def run(container: Container, *nodes: dict[str, Any], input: Any = None) -> RunDetail:
    definition = {"name": f"sf-{uuid.uuid4().hex[:8]}", "start": nodes[0]["id"], "nodes": nodes}
    return await run_definition(container, definition, input or {})


def output(detail: RunDetail, node_id: str) -> Any:
    [step] = [s for s in detail.steps if s.node_id == node_id][-1:]
    return step.output


def error(detail: RunDetail, node_id: str) -> dict[str, Any]:
    [step] = [s for s in detail.steps if s.node_id == node_id][-1:]
    assert step.error is not None, f"{node_id} did not fail: {step.output}"
    return step.error


LEAD = {"LastName": "Doe", "Company": "Acme", "Email": "jane@acme.example"}


# -- operations --------------------------------------------------------------------------


async def test_create_get_update_get_delete_share_one_token(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake, api_version="v60.0")
    rid = "{{ steps.create.output.id }}"
    detail = await run(
        container,
        sf(
            "create",
            "create",
            object="Lead",
            fields={**LEAD, "Phone": "{{ input.phone }}"},
            then="get",
        ),
        sf("get", "get", object="Lead", record_id=rid, fields=["LastName", "Phone"], then="update"),
        sf(
            "update",
            "update",
            object="{{ input.object }}",
            record_id=rid,
            fields={"Company": "Acme East"},
            then="get_all",
        ),
        sf("get_all", "get", object="Lead", record_id=rid, then="get_15"),
        sf(
            "get_15",
            "get",
            object="Lead",
            record_id="{{ steps.create.output.id[:15] }}",
            fields=["Company"],
            then="delete",
        ),
        sf("delete", "delete", object="Lead", record_id=rid),
        input={"phone": "+1 555 0100", "object": "Lead"},
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    created = output(detail, "create")
    assert created["success"] is True and created["created"] is True
    rid = created["id"]
    assert len(rid) == 18 and rid.startswith("00Q")
    assert output(detail, "get")["record"] == {
        "attributes": {"type": "Lead", "url": f"/services/data/v60.0/sobjects/Lead/{rid}"},
        "LastName": "Doe",
        "Phone": "+1 555 0100",
    }
    assert output(detail, "update") == {"id": rid, "success": True, "created": False}
    assert output(detail, "get_all")["record"]["Company"] == "Acme East"
    assert output(detail, "get_15")["record"]["Company"] == "Acme East"
    assert output(detail, "delete") == {"deleted": True, "id": rid}
    assert fake.records["Lead"] == {}
    # One token for five steps; every call on the credential's API version.
    assert fake.calls["token"] == 1
    rest = [s for s in fake.seen if s.kind != "token"]
    assert [s.kind for s in rest] == ["create", "get", "update", "get", "get", "delete"]
    assert all(s.path.startswith("/services/data/v60.0/sobjects/Lead") for s in rest)
    assert rest[1].query == {"fields": ["LastName,Phone"]}
    # No idempotency header: Salesforce's REST sObject resources take none.
    assert not any("idempotency-key" in {k.lower() for k in s.headers} for s in rest)


async def test_upsert_creates_then_updates_and_encodes_the_external_id(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    ext = "ACME/42?x=..#"
    node = sf(
        "upsert",
        "upsert",
        object="Lead",
        external_id_field="Ext_Id__c",
        external_id="{{ input.ext }}",
        fields={"LastName": "{{ input.name }}", "Company": "Acme"},
    )
    first = await run(container, node, input={"ext": ext, "name": "Doe"})
    second = await run(container, node, input={"ext": ext, "name": "Dane"})
    assert first.run.status is RunStatus.SUCCEEDED, first.run.error
    created, updated = output(first, "upsert"), output(second, "upsert")
    assert created["created"] is True and updated["created"] is False
    assert created["id"] == updated["id"]
    [record] = fake.records["Lead"].values()
    assert record["Ext_Id__c"] == ext and record["LastName"] == "Dane"
    # One path segment, every reserved character (and the dots) percent-encoded.
    [call, _] = fake.of("upsert")
    assert call.path == "/services/data/v62.0/sobjects/Lead/Ext_Id__c/ACME%2F42%3Fx%3D%2E%2E%23"
    # API versions before 46.0 answer an update by external id with 204 and no body.
    fake.fail(204, b"", match="upsert")
    assert output(await run(container, node, input={"ext": ext, "name": "Old"}), "upsert") == {
        "id": None,
        "success": True,
        "created": False,
    }
    # An integer external id works too.
    detail = await run(
        container,
        sf(
            "num",
            "upsert",
            object="Account",
            external_id_field="Num__c",
            external_id=7,
            fields={"Name": "Seven"},
        ),
    )
    assert output(detail, "num")["created"] is True


async def test_query_follows_next_records_url_up_to_max_rows(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    for n in range(25):
        fake.add_record("Lead", {"LastName": f"L{n:02}", "Company": "Acme", "Status": "Open"})
    fake.add_record("Lead", {"LastName": "Closed", "Company": "Acme", "Status": "Closed"})
    soql = "SELECT Id, LastName FROM Lead WHERE Status = '{{ input.status }}'"
    detail = await run(
        container,
        sf("all", "query", soql=soql, then="capped"),
        sf("capped", "query", soql=soql, max_rows=15, then="exact"),
        sf("exact", "query", soql=soql, max_rows=25),
        input={"status": "Open"},
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    everything = output(detail, "all")
    assert len(everything["records"]) == 25 and everything["total_size"] == 25
    assert everything["done"] is True and everything["truncated"] is False
    assert everything["records"][0]["attributes"]["type"] == "Lead"
    assert [r["LastName"] for r in everything["records"]] == [f"L{n:02}" for n in range(25)]
    capped = output(detail, "capped")
    assert len(capped["records"]) == 15 and capped["total_size"] == 25
    assert capped["truncated"] is True and capped["done"] is False
    exact = output(detail, "exact")
    assert len(exact["records"]) == 25 and exact["truncated"] is False
    # 3 pages, then 2 (it stops at the cap), then 3.
    assert fake.calls["query"] == 3 and fake.calls["query_more"] == 2 + 1 + 2
    assert fake.of("query")[0].query["q"] == [soql.replace("{{ input.status }}", "Open")]


async def test_a_next_records_url_off_the_instance_is_not_followed(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    rows = [{"attributes": {"type": "Lead"}, "Id": "00Q5g00000AAAAAAAA"}]
    for bad in (
        "//evil.example/services/data/v62.0/query/01g-2",
        "http://evil.example/services/data/v62.0/query/01g-2",
        "/services/data/v62.0/query/../../../oauth2/token",
        "/services/data/v62.0/query/%2e%2e/x",
        "/services/apexrest/x",
        42,
    ):
        page = {"totalSize": 3, "done": False, "records": rows, "nextRecordsUrl": bad}
        fake.fail(200, page, match="query")
        found = error(await run(container, sf("q", "query", soql="SELECT Id FROM Lead")), "q")
        assert found["type"] == "salesforce.invalid_response", bad
    assert fake.calls["query"] == 6 and fake.calls["query_more"] == fake.calls["unknown"] == 0


# -- errors ------------------------------------------------------------------------------

HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
SCRIPTED: list[tuple[int, Any, dict[str, str], str, str, bool]] = [
    # status, body, headers, content type, error type, transient
    (403, LIMIT_EXCEEDED, {"Retry-After": "7"}, "json", "salesforce.request_limit_exceeded", True),
    (
        400,
        [
            {
                "message": "unable to obtain exclusive access to this record",
                "errorCode": "UNABLE_TO_LOCK_ROW",
                "fields": [],
            }
        ],
        {},
        "json",
        "salesforce.unable_to_lock_row",
        True,
    ),
    (503, SERVER_UNAVAILABLE, {}, "json", "salesforce.server_unavailable", True),
    (500, b"", {}, "json", "salesforce.http_500", True),
    (502, HTML, {}, "text/html", "salesforce.invalid_response", True),
    (400, b'[{"message": "x", "errorCo', {}, "json", "salesforce.invalid_response", False),
    (201, b"<html>created?</html>", {}, "text/html", "salesforce.invalid_response", False),
    (
        400,
        [
            {
                "message": "Phone must have 10 digits",
                "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "fields": ["Phone"],
            }
        ],
        {},
        "json",
        "salesforce.field_custom_validation_exception",
        False,
    ),
    (404, [], {}, "json", "salesforce.http_404", False),
    (0, b"", {}, "json", "salesforce.network", True),
]


async def test_every_scripted_error_class_is_mapped(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    node = sf("create", "create", object="Lead", fields=LEAD)
    for status, body, headers, kind, error_type, transient in SCRIPTED:
        content_type = "text/html" if kind == "text/html" else "application/json;charset=UTF-8"
        fake.fail(status, body, headers=headers, content_type=content_type, match="create")
        detail = await run(container, node)
        assert detail.run.status is RunStatus.FAILED, error_type
        found = error(detail, "create")
        assert (found["type"], found["transient"]) == (error_type, transient), found
        if isinstance(body, list) and body:
            assert found["details"]["errorCode"] == body[0]["errorCode"]
            assert found["details"]["message"] == body[0]["message"]
        if headers:
            assert found["details"]["retry_after_s"] == 7.0
    fake.fail(201, {"id": "00Q5g00000AAAAAAAA", "success": True}, delay_s=1.0, match="create")
    found = error(
        await run(container, {**node, "config": {**node["config"], "timeout_s": 0.2}}), "create"
    )
    assert (found["type"], found["transient"]) == ("salesforce.timeout", True)
    assert fake.records.get("Lead", {}) == {}


async def test_salesforce_errors_of_real_requests(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    existing = fake.add_record("Lead", LEAD)
    fake.add_record("Account", {"Name": "A", "Ext__c": "dup"})
    fake.add_record("Account", {"Name": "B", "Ext__c": "dup"})
    cases: list[tuple[dict[str, Any], str]] = [
        (
            sf("n", "create", object="Lead", fields={"LastName": "X"}),
            "salesforce.required_field_missing",
        ),
        (
            sf("n", "create", object="Lead", fields={**LEAD, "Email": "b@x", "Bogus": 1}),
            "salesforce.invalid_field",
        ),
        (sf("n", "create", object="Lead", fields=LEAD), "salesforce.duplicates_detected"),
        (sf("n", "query", soql="SELECT Id FROM Nope"), "salesforce.invalid_type"),
        (sf("n", "query", soql="DELETE everything"), "salesforce.malformed_query"),
        (sf("n", "get", object="Lead", record_id="00Q5g00000zzzzzAAA"), "salesforce.not_found"),
        (sf("n", "get", object="Widget", record_id=existing), "salesforce.not_found"),
        (
            sf(
                "n",
                "upsert",
                object="Account",
                external_id_field="Ext__c",
                external_id="dup",
                fields={"Name": "C"},
            ),
            "salesforce.http_300",
        ),
    ]
    for node, error_type in cases:
        detail = await run(container, node)
        found = error(detail, "n")
        assert (found["type"], found["transient"]) == (error_type, False), found
        if error_type == "salesforce.required_field_missing":
            assert found["details"]["fields"] == ["Company"]
        if error_type == "salesforce.duplicates_detected":
            assert found["details"]["duplicate_ids"] == [existing]
        if error_type == "salesforce.http_300":
            assert len(found["details"]["body"]) == 2


async def test_oversized_answers_are_refused(container: Container, fake: FakeSalesforce) -> None:
    await add_credential(container, fake)
    for n in range(30):
        fake.add_record("Lead", {"LastName": "x" * 200 + str(n), "Company": "Acme"})
    detail = await run(
        container,
        sf("q", "query", soql="SELECT Id, LastName FROM Lead", max_response_bytes=1000),
    )
    assert error(detail, "q")["type"] == "salesforce.response_too_large"


async def test_transient_failures_are_retried_until_success(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    fake.fail(503, SERVER_UNAVAILABLE, times=2, match="create")
    fake.fail(403, LIMIT_EXCEEDED, headers={"Retry-After": "1"}, match="create")
    retry = {"max_attempts": 4, "initial_interval_s": 0.01, "jitter": "none"}
    started = time.monotonic()
    detail = await run(container, sf("create", "create", object="Lead", fields=LEAD, retry=retry))
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert fake.calls["create"] == 4 and len(fake.records["Lead"]) == 1
    retrying = [e.data for e in detail.events if e.type == "step.retrying"]
    assert [r["error"]["type"] for r in retrying] == [
        "salesforce.server_unavailable",
        "salesforce.server_unavailable",
        "salesforce.request_limit_exceeded",
    ]
    assert retrying[-1]["delay_s"] >= 1.0  # Retry-After is a floor
    assert time.monotonic() - started >= 1.0


async def test_a_catch_route_updates_the_duplicate_instead(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    existing = fake.add_record("Lead", {**LEAD, "Company": "Old Co"})
    detail = await run(
        container,
        sf(
            "create_lead",
            "create",
            object="Lead",
            fields={
                "LastName": "Doe",
                "Company": "{{ input.company }}",
                "Email": "{{ input.email }}",
            },
            catch=[{"errors": ["salesforce.duplicates_detected"], "next": "update_lead"}],
        ),
        sf(
            "update_lead",
            "update",
            object="Lead",
            record_id="{{ steps.create_lead.error.details.duplicate_ids[0] }}",
            fields={"Company": "{{ input.company }}"},
        ),
        input={"email": LEAD["Email"], "company": "New Co"},
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert error(detail, "create_lead")["type"] == "salesforce.duplicates_detected"
    assert output(detail, "update_lead") == {"id": existing, "success": True, "created": False}
    assert fake.records["Lead"][existing]["Company"] == "New Co"
    assert len(fake.records["Lead"]) == 1
    assert "step.caught" in [e.type for e in detail.events]


# -- OAuth -------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", ["refresh_token", "client_credentials", "jwt_bearer"])
async def test_each_oauth_flow_gets_a_token(
    container: Container, fake: FakeSalesforce, flow: str
) -> None:
    await add_credential(container, fake, flow=flow)
    detail = await run(container, sf("create", "create", object="Lead", fields=LEAD))
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [grant] = fake.of("token")
    form = {k: v[0] for k, v in parse_qs(grant.body.decode()).items()}
    assert grant.headers["Content-Type"] == "application/x-www-form-urlencoded"
    if flow == "refresh_token":
        assert form == {
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
        }
    elif flow == "client_credentials":
        assert form == {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
    else:
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        claims = jwt.decode(form["assertion"], PUBLIC_PEM, algorithms=["RS256"], audience=fake.url)
        assert (claims["iss"], claims["sub"]) == (CLIENT_ID, USERNAME)
        assert 0 < claims["exp"] - time.time() <= 180
        assert jwt.get_unverified_header(form["assertion"])["alg"] == "RS256"
    [create] = fake.of("create")
    assert create.headers["Authorization"].startswith("Bearer 00D")


async def test_token_endpoint_errors(container: Container, fake: FakeSalesforce) -> None:
    await add_credential(container, fake, "bad-refresh", refresh_token="rt-revoked-000000")
    await add_credential(
        container, fake, "bad-secret", flow="client_credentials", client_secret="cs-wrong-00000000"
    )
    await add_credential(
        container,
        fake,
        "bad-key",
        flow="jwt_bearer",
        private_key="-----BEGIN PRIVATE KEY-----\nnot a key\n",
    )
    other_private, _ = _keypair()
    await add_credential(container, fake, "other-key", flow="jwt_bearer", private_key=other_private)
    await add_credential(container, fake, "sf")
    cases = [
        ("bad-refresh", "salesforce.auth_invalid_grant", False),
        ("bad-secret", "salesforce.auth_invalid_client", False),
        ("bad-key", "salesforce.auth_invalid_private_key", False),
        ("other-key", "salesforce.auth_invalid_grant", False),
    ]
    for name, error_type, transient in cases:
        detail = await run(
            container, sf("c", "create", credential=name, object="Lead", fields=LEAD)
        )
        found = error(detail, "c")
        assert (found["type"], found["transient"]) == (error_type, transient), (name, found)
    fake.fail(
        503,
        b"<html>maintenance</html>",
        match="token",
        content_type="text/html",
        headers={"Retry-After": "3"},
    )
    found = error(await run(container, sf("c", "create", object="Lead", fields=LEAD)), "c")
    assert (found["type"], found["transient"]) == ("salesforce.auth_http_503", True)
    assert found["details"]["retry_after_s"] == 3.0
    fake.fail(0, b"", match="token")  # the connection drops
    found = error(await run(container, sf("c", "create", object="Lead", fields=LEAD)), "c")
    assert (found["type"], found["transient"]) == ("salesforce.auth_network", True)
    fake.audience = "https://login.salesforce.com"
    await add_credential(container, fake, "jwt", flow="jwt_bearer")
    found = error(
        await run(container, sf("c", "create", credential="jwt", object="Lead", fields=LEAD)), "c"
    )
    assert found["type"] == "salesforce.auth_invalid_grant"
    assert found["details"]["error_description"] == "audience is invalid"
    assert fake.calls["create"] == 0


async def test_a_token_is_cached_per_credential_and_a_new_one_follows_an_edit(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    fake.add_app(CLIENT_ID, refresh_token="rt-second-0000000000")
    node = sf("c", "create", object="Lead", fields={"LastName": "{{ input.n }}", "Company": "A"})
    # Two runs at once: one token request between them (one in-flight refresh).
    record, _, _ = await container.service.save_workflow(
        {"name": "twice", "start": "c", "nodes": [node]}
    )
    runs = [(await container.service.start_run(record.id, {"n": str(n)}))[0] for n in range(2)]
    await wait_for_runs(container, [r.id for r in runs])
    assert fake.calls["token"] == 1 and fake.calls["create"] == 2
    # An edited credential (a new refresh token) gets a token of its own.
    values = {
        "instance_url": fake.url,
        "token_url": fake.url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": "rt-second-0000000000",
    }
    await container.credentials.update("sf", data=values)
    await run(container, node, input={"n": "3"})
    grants = [g.body.decode() for g in fake.of("token")]
    assert len(grants) == 2 and "rt-second-0000000000" in grants[1]


async def test_invalid_session_refreshes_once_and_repeats_the_call(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    node = sf("c", "create", object="Lead", fields={"LastName": "{{ input.n }}", "Company": "A"})
    await run(container, node, input={"n": "1"})
    fake.expire_tokens()
    detail = await run(container, node, input={"n": "2"})
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert fake.calls["token"] == 2 and fake.calls["create"] == 1 + 2
    first, second = fake.of("create")[1:]
    assert first.headers["Authorization"] != second.headers["Authorization"]
    # Refused again with the new token: one refresh only, then a permanent error.
    fake.fail(401, SESSION_EXPIRED, times=2, match="create")
    detail = await run(container, node, input={"n": "3"})
    found = error(detail, "c")
    assert (found["type"], found["transient"]) == ("salesforce.invalid_session_id", False)
    assert fake.calls["token"] == 3 and fake.calls["create"] == 3 + 2


# -- origins, credential types and config ------------------------------------------------


async def test_origins_the_credential_does_not_admit_get_nothing(
    container: Container, fake: FakeSalesforce
) -> None:
    port = fake.url.rsplit(":", 1)[1]
    other = f"http://localhost:{port}"  # the same server under another origin
    await add_credential(
        container, fake, "token-elsewhere", token_url=other, allowed_origins=[fake.url]
    )
    await add_credential(
        container, fake, "instance-elsewhere", token_url=other, allowed_origins=[other]
    )
    for name in ("token-elsewhere", "instance-elsewhere"):
        detail = await run(
            container, sf("c", "create", credential=name, object="Lead", fields=LEAD)
        )
        found = error(detail, "c")
        assert found["type"] == "credential.origin_not_allowed", (name, found)
    assert fake.seen == []


async def test_the_token_instance_url_is_used_only_when_admitted(
    container: Container, fake: FakeSalesforce
) -> None:
    port = fake.url.rsplit(":", 1)[1]
    other = f"http://localhost:{port}"
    await add_credential(container, fake, "narrow")
    await add_credential(container, fake, "wide", allowed_origins=[fake.url, other])
    fake.token_instance_url = other
    for name in ("narrow", "wide"):
        node = sf(
            "c",
            "create",
            credential=name,
            object="Lead",
            fields={"LastName": "{{ input.n }}", "Company": "A"},
        )
        for n in range(2):
            detail = await run(container, node, input={"n": f"{name}{n}"})
            assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    hosts = [s.headers["Host"] for s in fake.of("create")]
    # narrow: the configured instance both times; wide: the token's instance once known.
    assert hosts == [
        f"127.0.0.1:{port}",
        f"127.0.0.1:{port}",
        f"127.0.0.1:{port}",
        f"localhost:{port}",
    ]


async def test_another_credential_type_is_refused(
    container: Container, fake: FakeSalesforce
) -> None:
    await container.credentials.create(
        "tok", CredentialType.BEARER, {"token": "tok-0123456789"}, allowed_origins=[fake.url]
    )
    found = error(
        await run(container, sf("c", "create", credential="tok", object="Lead", fields=LEAD)), "c"
    )
    assert found["type"] == "credential.type"
    assert fake.seen == []


async def test_rendered_names_and_ids_cannot_add_path_segments(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    for config in (
        {"operation": "create", "object": "{{ input.v }}", "fields": LEAD},
        {"operation": "get", "object": "Lead", "record_id": "{{ input.v }}"},
        {"operation": "create", "object": "Lead", "fields": {"{{ input.v }}": 1}},
        {
            "operation": "upsert",
            "object": "Lead",
            "external_id_field": "{{ input.v }}",
            "external_id": "x",
            "fields": LEAD,
        },
    ):
        operation = config.pop("operation")
        detail = await run(container, sf("c", operation, **config), input={"v": "Lead/../../query"})
        assert error(detail, "c")["type"] == "salesforce.invalid_config", config
    assert fake.seen == []


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"operation": "create", "object": "Lead/x", "fields": {}}, "API name"),
        ({"operation": "get", "object": "Lead", "record_id": "001"}, "record id"),
        ({"operation": "create", "object": "Lead"}, "needs fields"),
        ({"operation": "query", "soql": "SELECT Id FROM Lead", "object": "Lead"}, "does not take"),
        ({"operation": "create", "object": "Lead", "fields": {}, "max_rows": 5}, "max_rows"),
        (
            {"operation": "update", "object": "Lead", "record_id": "001000000000001", "fields": {}},
            "at least one",
        ),
        (
            {
                "operation": "get",
                "object": "Lead",
                "record_id": "001000000000001",
                "fields": {"a": 1},
            },
            "list of field names",
        ),
    ],
)
def test_configs_are_checked_when_saved(config: dict[str, Any], problem: str) -> None:
    from pydantic import ValidationError

    from flowyard.integrations.salesforce.models import SalesforceConfig

    with pytest.raises(ValidationError, match=problem):
        SalesforceConfig.model_validate({"credential": "sf", **config})


# -- secrets -----------------------------------------------------------------------------


async def test_secrets_are_nowhere_in_outputs_errors_events_logs_or_the_database(
    container: Container, fake: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_credential(container, fake)
    await add_credential(container, fake, "jwt", flow="jwt_bearer")
    details = [
        await run(
            container,
            sf("c", "create", object="Lead", fields=LEAD),
        ),
        await run(
            container,
            sf("c", "create", credential="jwt", object="Lead", fields={**LEAD, "Email": "j@x"}),
        ),
    ]
    tokens = dict(zip(("sf", "jwt"), fake.issued, strict=True))
    # Salesforce echoing the step's token, the client secret and the refresh token.
    for name, token in tokens.items():
        echoed = f"{token} {CLIENT_SECRET} {REFRESH_TOKEN}" if name == "sf" else token
        fake.fail(
            400,
            [{"message": f"rejected {echoed}", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION"}],
            match="create",
        )
        detail = await run(
            container,
            sf(
                "c", "create", credential=name, object="Lead", fields={**LEAD, "Email": f"{name}@y"}
            ),
        )
        assert error(detail, "c")["details"]["message"].startswith("rejected ***")
        details.append(detail)
    pem_lines = [line for line in PRIVATE_PEM.splitlines() if "-----" not in line]
    secrets = [*tokens.values(), CLIENT_SECRET, REFRESH_TOKEN, *pem_lines[:3]]
    text = json.dumps(
        [
            [
                d.run.output,
                d.run.error,
                [(s.output, s.error) for s in d.steps],
                [e.data for e in d.events],
            ]
            for d in details
        ],
        default=str,
    )
    dump = await dump_database(container.settings.db_url)
    for secret in secrets:
        assert secret not in text
        assert secret not in dump
        assert secret not in caplog.text


# -- the authenticator on its own (its token cache under concurrency and expiry) ----------


def resolved(fake: FakeSalesforce) -> ResolvedCredential:
    data = parse_data(
        CredentialType.SALESFORCE_OAUTH,
        {
            "instance_url": fake.url,
            "token_url": fake.url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
        },
    )
    origins = provider_origins(CredentialType.SALESFORCE_OAUTH, data) or []
    return ResolvedCredential.of("sf", CredentialType.SALESFORCE_OAUTH, data, tuple(origins))


async def test_concurrent_steps_wait_for_one_token_request(fake: FakeSalesforce) -> None:
    auth, credential, remembered = SalesforceAuth(), resolved(fake), set[str]()
    async with httpx.AsyncClient() as client:
        ctx = AuthContext(Outbound(client), remembered.add)
        sessions = await asyncio.gather(*(auth.session(credential, ctx) for _ in range(20)))
    assert fake.calls["token"] == 1
    assert {s.token for s in sessions} == set(fake.issued)
    assert set(fake.issued) <= remembered and CLIENT_SECRET in remembered


async def test_invalidate_drops_only_the_token_that_was_refused(fake: FakeSalesforce) -> None:
    auth, credential = SalesforceAuth(), resolved(fake)
    async with httpx.AsyncClient() as client:
        ctx = AuthContext(Outbound(client), lambda _: None)
        first = await auth.session(credential, ctx)
        # A step refused with an older token leaves the current one alone.
        assert auth.invalidate("sf", "Bearer an-older-token") is False
        assert (await auth.session(credential, ctx)).token == first.token
        assert auth.invalidate("sf", f"Bearer {first.token}") is True
        second = await auth.session(credential, ctx)
    assert second.token != first.token and fake.calls["token"] == 2


async def test_a_token_said_to_expire_is_renewed_before_it_does(fake: FakeSalesforce) -> None:
    now = [1000.0]
    auth, credential = SalesforceAuth(monotonic=lambda: now[0]), resolved(fake)
    fake.token_expires_in = 3600
    async with httpx.AsyncClient() as client:
        ctx = AuthContext(Outbound(client), lambda _: None)
        first = await auth.session(credential, ctx)
        now[0] += 3600 - 31
        assert (await auth.session(credential, ctx)).token == first.token
        now[0] += 2  # within the 30 s margin
        assert (await auth.session(credential, ctx)).token != first.token
    assert fake.calls["token"] == 2
