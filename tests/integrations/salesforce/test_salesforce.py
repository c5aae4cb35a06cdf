"""The ``salesforce`` node type end to end: real container and worker, real sockets, the
local Salesforce of ``tests/fakes/salesforce.py``. Operations, errors, retries, a catch
route, config checks (OAuth and secrets: ``test_salesforce_auth.py``)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from fakes.salesforce import LIMIT_EXCEEDED, SERVER_UNAVAILABLE, FakeSalesforce
from flowyard.bootstrap import Container
from flowyard.domain.errors import DefinitionError
from flowyard.domain.statuses import RunStatus
from flowyard.integrations.salesforce.models import SalesforceConfig
from support.salesforce import (
    LEAD,
    add_credential,
    error,
    output,
    run,
    sf,
)

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
    with pytest.raises(ValidationError, match=problem):
        SalesforceConfig.model_validate({"credential": "sf", **config})


async def test_a_bad_config_is_a_definition_error_with_its_pointer(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    definition = {
        "name": "bad",
        "start": "c",
        "nodes": [sf("c", "get", object="Lead/../Account", record_id="00Q5g00000AAAAAAAA")],
    }
    with pytest.raises(DefinitionError) as caught:
        await container.service.save_workflow(definition)
    assert [p.pointer for p in caught.value.problems] == ["/nodes/0/config"]
    assert "API name" in caught.value.problems[0].message
