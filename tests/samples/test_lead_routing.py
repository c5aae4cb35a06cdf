"""examples/lead_routing.json: East Coast leads become Salesforce leads of the account
manager (a 503 is retried with backoff; a duplicate updates the existing lead), the others go
to the general pool's queue; every lead ends in an email to sales ops."""

from __future__ import annotations

from fakes.salesforce import SERVER_UNAVAILABLE, FakeSalesforce
from fakes.smtp import FakeSmtp
from flowyard.bootstrap import Container
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.service import RunDetail
from support.samples import LEAD_ROUTING, finished, sample_vars, save_and_start, step, taken

EAST, POOL = sample_vars(LEAD_ROUTING)["east_manager"], sample_vars(LEAD_ROUTING)["general_pool"]


async def route(container: Container, lead: dict[str, str]) -> RunDetail:
    return await finished(container, await save_and_start(container, LEAD_ROUTING, lead))


async def test_an_east_coast_lead_survives_two_503s(
    worker: Container, salesforce: FakeSalesforce, relay: FakeSmtp
) -> None:
    salesforce.fail(503, SERVER_UNAVAILABLE, times=2, match="create")
    lead = {
        "email": "ada@east.example",
        "region": "East Coast",
        "name": "Lovelace",
        "company": "Analytical Engines",
    }
    detail = await route(worker, lead)

    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert taken(detail) == ["new_lead", "is_east", "create_lead", "summary", "notify", "done"]
    create = step(detail, "create_lead")
    assert (create.status, create.attempt) == (StepStatus.SUCCEEDED, 3)
    retries = [e for e in detail.events if e.type == "step.retrying"]
    assert [e.data["error"]["type"] for e in retries] == ["salesforce.server_unavailable"] * 2
    assert salesforce.calls["create"] == 3
    [(record_id, record)] = salesforce.records["Lead"].items()
    assert record["OwnerId"] == EAST and record["Email"] == lead["email"]
    assert record["LastName"] == "Lovelace" and record["LeadSource"] == "Web"
    assert detail.run.output == {
        "email": lead["email"],
        "route": "east",
        "action": "created",
        "record_id": record_id,
    }
    [mail] = relay.received
    assert mail.rcpt_tos == ["sales-ops@example.com"]
    assert mail.message["Subject"] == "New lead ada@east.example (East Coast)"
    body = mail.message.get_content()
    assert "the East Coast account manager" in body and f"lead {record_id} created" in body


async def test_a_duplicate_lead_updates_the_existing_one(
    worker: Container, salesforce: FakeSalesforce, relay: FakeSmtp
) -> None:
    existing = salesforce.add_record(
        "Lead",
        {
            "LastName": "Hopper",
            "Company": "Navy",
            "Email": "grace@east.example",
            "OwnerId": POOL,
            "Status": "Open - Not Contacted",
        },
    )
    lead = {"email": "grace@east.example", "region": "East Coast", "name": "Hopper"}
    detail = await route(worker, lead)

    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert taken(detail) == [
        "new_lead",
        "is_east",
        "create_lead",
        "update_existing",
        "summary",
        "notify",
        "done",
    ]
    refused = step(detail, "create_lead")
    assert refused.status is StepStatus.FAILED and refused.attempt == 1  # permanent: no retry
    assert refused.error["type"] == "salesforce.duplicates_detected"
    assert [s.kind for s in salesforce.seen if s.kind != "token"] == ["create", "update"]
    assert salesforce.of("update")[0].path.endswith(f"/sobjects/Lead/{existing}")
    assert salesforce.records["Lead"] == {
        existing: {
            "Id": existing,
            "LastName": "Hopper",
            "Company": "Navy",
            "Email": "grace@east.example",
            "OwnerId": EAST,
            "Status": "Working - Contacted",
        }
    }
    assert detail.run.output["action"] == "updated"
    assert detail.run.output["record_id"] == existing
    [mail] = relay.received
    assert f"lead {existing} updated" in mail.message.get_content()


async def test_other_regions_go_to_the_general_pool(
    worker: Container, salesforce: FakeSalesforce, relay: FakeSmtp
) -> None:
    lead = {"email": "alan@west.example", "region": "West"}
    detail = await route(worker, lead)

    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert taken(detail) == ["new_lead", "is_east", "assign_pool", "summary", "notify", "done"]
    [record] = salesforce.records["Lead"].values()
    assert record["OwnerId"] == POOL
    assert (record["LastName"], record["Company"]) == ("[not provided]", "[not provided]")
    assert detail.run.output["route"] == "pool"
    [mail] = relay.received
    assert "the general pool" in mail.message.get_content()


async def test_a_lead_salesforce_refuses_fails_the_run_after_the_log(
    worker: Container, salesforce: FakeSalesforce, relay: FakeSmtp
) -> None:
    salesforce.org.unique["Lead"] = set()
    salesforce.fail(
        400,
        [
            {
                "message": "Phone: bad value",
                "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "fields": ["Phone"],
            }
        ],
        match="create",
    )
    lead = {"email": "bad@east.example", "region": "East Coast", "phone": "no"}
    detail = await route(worker, lead)

    assert detail.run.status is RunStatus.FAILED
    assert detail.run.error is not None and detail.run.error["type"] == "lead.not_saved"
    assert taken(detail)[-3:] == ["create_lead", "notify_failure", "failed"]
    assert detail.cause is not None and detail.cause.node_id == "create_lead"
    assert salesforce.calls["create"] == 1 and relay.received == []
