"""The messaging node types end to end, on both backends, with a real worker under a fake
clock: a provider's ``Retry-After`` (Twilio 20429, Slack ``ratelimited``, Graph's business
use case estimate) schedules the retry exactly that far ahead, and a reply analysed for
sentiment fans out to Slack and SMS through the fakes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from fakes.fakehttp import FakeServer
from fakes.graph import FakeGraph
from fakes.graph import rate_limited as graph_rate_limited
from fakes.slack import Channel, FakeSlack
from fakes.slack import rate_limited as slack_rate_limited
from fakes.twilio import FakeTwilio, too_many_requests
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.settings import Settings
from support.chatflows import assert_secret_free, basic, one_node, stored_text
from support.clock import FakeClock
from support.harness import built, eventually, run_ends, start_run, step_reaches, working
from support.runs import run_definition

ACCOUNT = "AC" + "abcdef0123456789" * 2
AUTH_TOKEN = "e2e-twilio-auth-token-31415926"
BOT_TOKEN = "xoxb-e2e-2718281828-bot-token"
ACCESS_TOKEN = "EAAe2eGraphAccessToken1618033988"
IG_ACCOUNT, PERSON = "17841400000000009", "1111222233334444"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(accounts={ACCOUNT: AUTH_TOKEN}) as fake:
        yield fake


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(tokens={BOT_TOKEN: "T1"}, channels=[Channel("C0SUPPORT", "support")]) as fake:
        yield fake


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with FakeGraph(token=ACCESS_TOKEN, account_id=IG_ACCOUNT, open_window={PERSON}) as fake:
        yield fake


async def add_credentials(
    container: Container, twilio: FakeTwilio, slack: FakeSlack, graph: FakeGraph
) -> None:
    create = container.credentials.create
    await create(
        "tw",
        CredentialType.TWILIO,
        {"account_sid": ACCOUNT, "auth_token": AUTH_TOKEN, "base_url": twilio.url},
    )
    await create("bot", CredentialType.SLACK, {"bot_token": BOT_TOKEN, "base_url": slack.url})
    await create(
        "ig",
        CredentialType.META_GRAPH,
        {"access_token": ACCESS_TOKEN, "account_id": IG_ACCOUNT, "base_url": graph.url},
    )


SMS = {"credential": "tw", "to": "+14155550100", "from": "+14155550199", "body": "hi"}
SLACK = {"credential": "bot", "channel": "C0SUPPORT", "text": "hi"}
DM = {"credential": "ig", "operation": "send_message", "recipient_id": PERSON, "text": "hi"}
POLICY = {"max_attempts": 3, "initial_interval_s": 1, "backoff_rate": 2, "jitter": "none"}


@pytest.mark.parametrize(
    ("node_type", "config", "fake_name", "answer", "delay_s"),
    [
        ("sms", SMS, "twilio", too_many_requests(30), 30),
        ("slack", SLACK, "slack", slack_rate_limited(45), 45),
        ("instagram", DM, "graph", graph_rate_limited(4, regain_minutes=2), 120),
    ],
    ids=["twilio-20429", "slack-ratelimited", "graph-buc"],
)
async def test_a_providers_retry_after_schedules_the_retry(
    settings: Settings,
    twilio: FakeTwilio,
    slack: FakeSlack,
    graph: FakeGraph,
    node_type: str,
    config: dict[str, Any],
    fake_name: str,
    answer: Any,
    delay_s: int,
) -> None:
    fake: FakeServer = {"twilio": twilio, "slack": slack, "graph": graph}[fake_name]
    fake.fail_next(answer)
    clock = FakeClock()
    t0 = clock.now
    async with built(settings, clock) as c, working(c) as (_, probe):
        await add_credentials(c, twilio, slack, graph)
        run = await start_run(c, one_node(node_type, config, retry=POLICY))
        step = await step_reaches(c, run.id, "send", StepStatus.RETRYING, 1)
        # The policy alone says 1 s; the provider asked for more.
        assert step.available_at == t0 + timedelta(seconds=delay_s)
        clock.advance(delay_s - 1)
        assert "send" not in await probe.passes_at(clock.now)
        assert fake.calls == 1
        clock.advance(1)
        await eventually(lambda: fake.calls == 2, "the retry at retry_at")
        finished = await run_ends(c, run.id)
        detail = await c.service.get_run(run.id)
    assert finished.status is RunStatus.SUCCEEDED, finished.error
    retrying = [e for e in detail.events if e.type == "step.retrying"]
    assert [e.data["delay_s"] for e in retrying] == [delay_s]
    started = [e.created_at for e in detail.events if e.type == "step.started"]
    assert started == [t0, t0 + timedelta(seconds=delay_s)]
    assert_secret_free(stored_text(detail), AUTH_TOKEN, BOT_TOKEN, ACCESS_TOKEN)


async def test_an_unhappy_reply_alerts_slack_and_texts_the_customer(
    container: Container, twilio: FakeTwilio, slack: FakeSlack, graph: FakeGraph
) -> None:
    await add_credentials(container, twilio, slack, graph)
    definition = {
        "name": "reply-triage",
        "start": "mood",
        "nodes": [
            {
                "id": "mood",
                "type": "sentiment",
                "config": {"text": "{{ input.reply }}"},
                "next": "route",
            },
            {
                "id": "route",
                "type": "condition",
                "config": {
                    "cases": [{"when": "steps.mood.output.label == 'negative'", "next": "alert"}],
                    "default": "thanks",
                },
            },
            {
                "id": "alert",
                "type": "slack",
                "config": {
                    **SLACK,
                    "text": "Unhappy reply from {{ input.phone }} "
                    "(score {{ steps.mood.output.score }})",
                },
                "next": "apologise",
            },
            {
                "id": "apologise",
                "type": "sms",
                "config": {
                    **SMS,
                    "to": "{{ input.phone }}",
                    "body": "Sorry to hear that, {{ input.name }}. A person will call you today.",
                },
                "next": "dm",
            },
            {
                "id": "dm",
                "type": "instagram",
                "config": {**DM, "text": "We are on it, {{ input.name }}."},
                "next": "done",
            },
            {
                "id": "done",
                "type": "end",
                "config": {
                    "output": {
                        "ts": "{{ steps.alert.output.ts }}",
                        "sid": "{{ steps.apologise.output.sid }}",
                        "dm": "{{ steps.dm.output.id }}",
                    }
                },
            },
            {"id": "thanks", "type": "end", "config": {"output": "thanks"}},
        ],
    }
    detail = await run_definition(
        container,
        definition,
        {
            "reply": "This is awful, nothing works and nobody answers.",
            "phone": "+14155550123",
            "name": "Ada",
        },
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [posted], [sent], [dm] = slack.posted, twilio.sent, graph.messages
    assert detail.run.output == {"ts": posted["ts"], "sid": sent["sid"], "dm": dm["id"]}
    assert posted["text"].startswith("Unhappy reply from +14155550123 (score -0.")
    assert sent["to"] == "+14155550123" and sent["body"].startswith("Sorry to hear that, Ada.")
    assert dm == {"recipient": PERSON, "text": "We are on it, Ada.", "id": dm["id"]}
    assert twilio.requests[0].headers["authorization"] == basic(ACCOUNT, AUTH_TOKEN)
    assert slack.requests[0].headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert graph.requests[0].headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert_secret_free(stored_text(detail), AUTH_TOKEN, BOT_TOKEN, ACCESS_TOKEN)

    happy = await run_definition(
        container,
        definition,
        {"reply": "Thank you so much, this is great!", "phone": "+1", "name": "B"},
    )
    assert happy.run.output == "thanks"
    assert (twilio.calls, slack.calls, graph.calls) == (1, 1, 1)
