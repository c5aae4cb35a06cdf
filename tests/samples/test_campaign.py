"""examples/campaign_sentiment.json: an offer by email, a wait for the ``reply`` signal (48 h
by default), the reply's sentiment -> a Salesforce Task for the sales rep (positive), a Case
for support (negative), a follow-up email (neutral, or no reply in time)."""

from __future__ import annotations

from typing import Any

import pytest

from fakes.salesforce import FakeSalesforce
from fakes.smtp import FakeSmtp
from flowyard.bootstrap import Container
from flowyard.domain.ids import RunId
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.service import RunDetail
from support.harness import step_reaches
from support.samples import CAMPAIGN, finished, sample_vars, save_and_start, step, taken

VARS = sample_vars(CAMPAIGN)
ADA = {"email": "ada@customer.example", "name": "Ada"}


async def reply(container: Container, text: str | None) -> RunDetail:
    """Start a campaign run for Ada, wait until it waits for her reply, send ``text`` as the
    ``reply`` signal (None: no reply, within a one-second window), and wait for the end."""
    window: dict[str, Any] | None = {"reply_window": "1s"} if text is None else None
    run_id = await save_and_start(container, CAMPAIGN, ADA, vars=window)
    if text is not None:
        await step_reaches(container, RunId(run_id), "wait_reply", StepStatus.WAITING, 1)
        await container.service.send_signal(run_id, "reply", {"text": text})
    return await finished(container, run_id)


def offer_sent(relay: FakeSmtp, detail: RunDetail) -> None:
    first = relay.received[0]
    assert first.rcpt_tos == [ADA["email"]]
    assert first.message["Subject"] == "Ada, your workflows could run themselves"
    assert first.message["X-Campaign"] == "spring-automation"
    assert step(detail, "send_offer").output["accepted"] == [ADA["email"]]


async def test_a_positive_reply_becomes_a_task_for_the_sales_rep(
    worker: Container, salesforce: FakeSalesforce, relay: FakeSmtp
) -> None:
    detail = await reply(worker, "Yes, this looks great! I would love a demo next week.")

    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert taken(detail) == [
        "enrolled",
        "send_offer",
        "wait_reply",
        "analyse",
        "route",
        "sales_task",
        "sales",
    ]
    offer_sent(relay, detail)
    assert len(relay.received) == 1  # no follow-up
    analysis = step(detail, "analyse").output
    assert analysis["label"] == "positive" and analysis["score"] >= 0.05
    [(task_id, task)] = salesforce.records["Task"].items()
    assert task_id.startswith("00T")
    assert task["OwnerId"] == VARS["sales_rep"] and task["Priority"] == "High"
    assert "I would love a demo" in task["Description"]
    assert "Case" not in salesforce.records
    assert detail.run.output == {
        "outcome": "sales_task",
        "sentiment": "positive",
        "task_id": task_id,
    }


async def test_a_negative_reply_opens_a_support_case(
    worker: Container, salesforce: FakeSalesforce, relay: FakeSmtp
) -> None:
    detail = await reply(worker, "This is terrible. Your last invoice was wrong and nobody helped.")

    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert taken(detail)[-2:] == ["support_case", "support"]
    assert step(detail, "analyse").output["label"] == "negative"
    [(case_id, case)] = salesforce.records["Case"].items()
    assert case["OwnerId"] == VARS["support_queue"] and case["Origin"] == "Email"
    assert "invoice was wrong" in case["Description"]
    assert "Task" not in salesforce.records and len(relay.received) == 1
    assert detail.run.output == {
        "outcome": "support_case",
        "sentiment": "negative",
        "case_id": case_id,
    }


@pytest.mark.parametrize(
    "text", ["What time zone are your servers in?", None], ids=["neutral", "no-reply"]
)
async def test_a_neutral_reply_or_none_gets_a_follow_up_email(
    worker: Container, salesforce: FakeSalesforce, relay: FakeSmtp, text: str | None
) -> None:
    detail = await reply(worker, text)

    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert taken(detail)[-2:] == ["follow_up", "followed_up"]
    offer_sent(relay, detail)
    [_, follow_up] = relay.received
    assert follow_up.message["Subject"] == "Re: Ada, your workflows could run themselves"
    assert "two-minute tour" in follow_up.message.get_content()
    assert salesforce.calls["create"] == 0
    expected = "neutral" if text else "no_reply"
    assert detail.run.output == {"outcome": "follow_up", "sentiment": expected}
    if text is None:
        assert step(detail, "wait_reply").output["timed_out"] is True
        assert "analyse" not in taken(detail)
