"""Issue 11's per-node-type acceptance for quotas: every provider node type (salesforce,
email over SMTP and over SendGrid, sms, whatsapp, slack, instagram) against its fake over
real sockets, driven by a real worker, on SQLite and PostgreSQL (the ``container``
fixture):

- a quota on its credential or on its node type defers a step past it (``step.deferred``,
  not an attempt, the provider never called), and the sentiment node (no provider) takes a
  node-type quota too;
- the provider's own rate-limit answer is a transient error AND pauses the credential's
  shared bucket (``paused_until``), so every worker backs off;
- no secret of the credential is in the run's events, the step's output or error, or the
  logs.

One table (:data:`PROVIDERS`) says, per node type, its config, its credential, its fake and
how many calls the fake saw.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from fakes.graph import FakeGraph
from fakes.graph import rate_limited as graph_rate_limited
from fakes.salesforce import FakeSalesforce
from fakes.sendgrid import Answer as SendgridAnswer
from fakes.sendgrid import FakeSendgrid, too_many
from fakes.slack import Channel, FakeSlack, slack_error
from fakes.slack import rate_limited as slack_rate_limited
from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio, too_many_requests, twilio_error
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType
from flowyard.domain.quotas import credential_key, node_type_key
from flowyard.domain.statuses import RunStatus
from flowyard.service import RunDetail
from support.chatflows import assert_secret_free, one_node, stored_text
from support.runs import run_definition
from support.salesforce import CLIENT_SECRET, LEAD, REFRESH_TOKEN, add_credential, new_fake

ACCOUNT = "AC" + "0f1e2d3c4b5a6978" * 2
AUTH_TOKEN = "quota-twilio-auth-token-7e6d5c"
BOT_TOKEN = "xoxb-quota-1357924680-bot-token"
ACCESS_TOKEN = "EAAquotaGraphAccessToken2468013579"
IG_ACCOUNT, PERSON = "17841400000000001", "1111222233334444"
API_KEY = "SG.quota-key-Zx8Wv6Ut4Sr2"
SMTP_USER, SMTP_PASSWORD = "mailer", "smtp-quota-pw-4Hq8Lm2Np6"

MAIL = {"from": "noreply@example.com", "to": "ada@example.org", "subject": "Hi", "text": "Hi"}


@dataclass
class Provider:
    """One node type under test: its step's config, its credential's secrets, its fake."""

    node_type: str
    config: dict[str, Any]
    fake: Any = None
    calls: Callable[[], int] = lambda: 0
    secrets: Callable[[], list[str]] = list
    credential: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    #: Its row of the table (``smtp``, ``sendgrid``, ...).
    name: str = ""


async def _salesforce(container: Container, stack: AsyncExitStack) -> Provider:
    fake: FakeSalesforce = new_fake()
    stack.callback(fake.stop)
    await add_credential(container, fake)
    # The fake's duplicate rule matches on Email: one per run.
    fields = {**LEAD, "Email": "{{ input.n }}@acme.example"}
    config = {"credential": "sf", "operation": "create", "object": "Lead", "fields": fields}
    return Provider(
        "salesforce",
        config,
        fake,
        lambda: fake.calls["create"],
        lambda: [CLIENT_SECRET, REFRESH_TOKEN, *fake.tokens()],
        "sf",
    )


async def _smtp(container: Container, stack: AsyncExitStack) -> Provider:
    fake = await FakeSmtp(mode="plain", users={SMTP_USER: SMTP_PASSWORD}).start()
    stack.push_async_callback(fake.stop)
    # A plain login is allowed to a relay on this machine (a local MTA, a sidecar).
    values = {"host": "127.0.0.1", "port": fake.port, "starttls": False}
    values.update(username=SMTP_USER, password=SMTP_PASSWORD)
    await container.credentials.create("relay", CredentialType.SMTP, values)
    return Provider(
        "email",
        {"credential": "relay", **MAIL},
        fake,
        lambda: len(fake.received),
        lambda: [SMTP_PASSWORD],
        "relay",
    )


async def _sendgrid(container: Container, stack: AsyncExitStack) -> Provider:
    fake = FakeSendgrid(API_KEY).start()
    stack.callback(fake.stop)
    values = {"api_key": API_KEY, "base_url": fake.url}
    await container.credentials.create("sg", CredentialType.SENDGRID, values)
    return Provider(
        "email",
        {"credential": "sg", **MAIL},
        fake,
        lambda: fake.calls,
        lambda: [API_KEY],
        "sg",
    )


async def _twilio(container: Container, stack: AsyncExitStack, node_type: str) -> Provider:
    fake = stack.enter_context(FakeTwilio(accounts={ACCOUNT: AUTH_TOKEN}))
    values = {"account_sid": ACCOUNT, "auth_token": AUTH_TOKEN, "base_url": fake.url}
    await container.credentials.create("tw", CredentialType.TWILIO, values)
    config = {"credential": "tw", "to": "+14155550100", "from": "+14155550199", "body": "hi"}
    return Provider(node_type, config, fake, lambda: fake.calls, lambda: [AUTH_TOKEN], "tw")


async def _slack(container: Container, stack: AsyncExitStack) -> Provider:
    fake = stack.enter_context(
        FakeSlack(tokens={BOT_TOKEN: "T1"}, channels=[Channel("C0SUPPORT", "support")])
    )
    values = {"bot_token": BOT_TOKEN, "base_url": fake.url}
    await container.credentials.create("bot", CredentialType.SLACK, values)
    config = {"credential": "bot", "channel": "C0SUPPORT", "text": "hi"}
    return Provider("slack", config, fake, lambda: fake.calls, lambda: [BOT_TOKEN], "bot")


async def _instagram(container: Container, stack: AsyncExitStack) -> Provider:
    fake = stack.enter_context(
        FakeGraph(token=ACCESS_TOKEN, account_id=IG_ACCOUNT, open_window={PERSON})
    )
    values = {"access_token": ACCESS_TOKEN, "account_id": IG_ACCOUNT, "base_url": fake.url}
    await container.credentials.create("ig", CredentialType.META_GRAPH, values)
    config = {"credential": "ig", "operation": "send_message", "recipient_id": PERSON}
    config["text"] = "hi"
    return Provider("instagram", config, fake, lambda: fake.calls, lambda: [ACCESS_TOKEN], "ig")


async def _sentiment(container: Container, stack: AsyncExitStack) -> Provider:
    return Provider("sentiment", {"text": "{{ input.reply }}"}, input={"reply": "I love it!"})


SETUPS: dict[str, Callable[[Container, AsyncExitStack], Any]] = {
    "salesforce": _salesforce,
    "smtp": _smtp,
    "sendgrid": _sendgrid,
    "sms": lambda c, s: _twilio(c, s, "sms"),
    "whatsapp": lambda c, s: _twilio(c, s, "whatsapp"),
    "slack": _slack,
    "instagram": _instagram,
    "sentiment": _sentiment,
}
PROVIDERS = [name for name in SETUPS if name != "sentiment"]


@pytest.fixture
async def provider(request: pytest.FixtureRequest, container: Container) -> AsyncIterator[Provider]:
    async with AsyncExitStack() as stack:
        provider = await SETUPS[request.param](container, stack)
        provider.name = request.param
        yield provider


def _now() -> datetime:
    return datetime.now(UTC)


async def _started(container: Container, provider: Provider, count: int) -> list[str]:
    record, _, _ = await container.service.save_workflow(
        one_node(provider.node_type, provider.config, name=f"{provider.node_type}-quota")
    )
    runs: list[str] = []
    for _ in range(count):
        each = {**provider.input, "n": uuid.uuid4().hex}
        run, _ = await container.service.start_run(record.id, each)
        runs.append(run.id)
    return runs


async def _work_until_one_ends_and_one_defers(
    container: Container, run_ids: list[str]
) -> list[RunDetail]:
    """A worker until one run has ended and the other's step was deferred (the deferred
    one would wait out the quota's minute); both runs' details."""
    details: list[RunDetail] = []

    async def settled() -> bool:
        nonlocal details
        details = [await container.service.get_run(r) for r in run_ids]
        ended = [d for d in details if d.run.status.is_terminal]
        deferred = [d for d in details if any(e.type == "step.deferred" for e in d.events)]
        return len(ended) == 1 and len(deferred) == 1

    done = False
    worker = container.new_worker(concurrency=2)

    async def poll() -> None:
        nonlocal done
        while not await settled():
            await asyncio.sleep(0.05)
        done = True

    poller = asyncio.create_task(poll())
    try:
        await worker.run_until(lambda: done, timeout_s=30)
    finally:
        poller.cancel()
    assert done, [d.run.status for d in details]
    return details


def _key(provider: Provider, kind: str) -> str:
    if kind == "node_type":
        return node_type_key(provider.node_type)
    assert provider.credential is not None
    return credential_key(provider.credential)


def _slowdowns(container: Container) -> float:
    value = container.metrics.registry.get_sample_value("flowyard_quota_slowdowns_total")
    return value or 0.0


@pytest.mark.parametrize("provider", [*PROVIDERS, "sentiment"], indirect=True)
async def test_a_step_over_its_quota_is_deferred_not_attempted(
    container: Container, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """One per minute on the credential, then on the node type; two runs each time: one
    step succeeds (and slows nothing down), the other is deferred (not an attempt: none
    counted; the provider saw one call); no secret in the runs' events, steps or the logs."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="flowyard")
    kinds = ["node_type"] if provider.credential is None else ["credential", "node_type"]
    for kind in kinds:
        key = _key(provider, kind)
        await container.quotas.put(key, "1 per 60s", burst=1)
        calls = provider.calls()
        run_ids = await _started(container, provider, 2)

        details = await _work_until_one_ends_and_one_defers(container, run_ids)

        [ended] = [d for d in details if d.run.status.is_terminal]
        [waiting] = [d for d in details if not d.run.status.is_terminal]
        # Read again now that the worker stopped: a run's detail is read in parts, and the
        # step may have been read claimed, just before its deferral was committed.
        waiting = await container.service.get_run(waiting.run.id)
        assert ended.run.status is RunStatus.SUCCEEDED, ended.run.error
        [step] = waiting.steps
        # Back in the queue for when the bucket refills, its claim given back uncounted.
        events = [(e.type, e.data) for e in waiting.events]
        assert (step.status.value, step.attempt) == ("scheduled", 0), (kind, events)
        deferred = [e for e in waiting.events if e.type == "step.deferred"]
        assert deferred and all(e.data["quotas"] == [key] for e in deferred)
        assert provider.calls() - calls == (1 if provider.fake is not None else 0)
        # A success pauses nothing (the rate-limit checks below can fail).
        assert (await container.quotas.get(key)).bucket.paused_until is None
        assert _slowdowns(container) == 0
        everything = stored_text(ended) + stored_text(waiting) + caplog.text
        assert_secret_free(everything, *provider.secrets())
        await container.service.cancel_run(waiting.run.id)
        await container.quotas.delete(key)


def _request_limit(
    fake: FakeSalesforce, status: int, headers: dict[str, str] | None = None
) -> None:
    """Salesforce's API limit answer to the next create."""
    error = {"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}
    fake.fail(status, [error], match="create", headers=headers)


#: (provider, case, the provider's rate-limit answer scripted on its fake, the error type,
#: whether the answer says how long to wait).
RATE_LIMITS: list[tuple[str, str, Callable[[Any], None], str, bool]] = [
    (
        "salesforce",
        "request_limit_exceeded",
        lambda f: _request_limit(f, 403),
        "salesforce.request_limit_exceeded",
        False,
    ),
    (
        "salesforce",
        "429-retry-after",
        lambda f: _request_limit(f, 429, {"Retry-After": "30"}),
        "salesforce.request_limit_exceeded",
        True,
    ),
    ("sendgrid", "429-retry-after", lambda f: f.script(too_many(30)), "email.sendgrid_429", True),
    (
        "sendgrid",
        "429-bare",
        lambda f: f.script(SendgridAnswer(429, {"errors": [{"message": "too many requests"}]})),
        "email.sendgrid_429",
        False,
    ),
    (
        "sms",
        "20429-retry-after",
        lambda f: f.fail_next(too_many_requests(30)),
        "twilio.20429",
        True,
    ),
    (
        "sms",
        "20429-bare",
        lambda f: f.fail_next(twilio_error(20429, "Too many requests", status=429)),
        "twilio.20429",
        False,
    ),
    (
        "whatsapp",
        "429-other-code",
        lambda f: f.fail_next(twilio_error(14107, "Message rate limit exceeded", status=429)),
        "twilio.14107",
        False,
    ),
    (
        "slack",
        "ratelimited-retry-after",
        lambda f: f.fail_next(slack_rate_limited(30)),
        "slack.ratelimited",
        True,
    ),
    (
        "slack",
        "ratelimited-bare",
        lambda f: f.fail_next(slack_error("ratelimited", 429)),
        "slack.ratelimited",
        False,
    ),
    (
        "slack",
        "rate_limited-200",
        lambda f: f.fail_next(slack_error("rate_limited")),
        "slack.rate_limited",
        False,
    ),
    *[
        (
            "instagram",
            f"code-{code}",
            (lambda c: lambda f: f.fail_next(graph_rate_limited(c)))(code),
            f"instagram.{code}",
            False,
        )
        for code in (4, 17, 32, 613)
    ],
    (
        "instagram",
        "business-use-case",
        lambda f: f.fail_next(graph_rate_limited(80002, regain_minutes=1)),
        "instagram.80002",
        True,
    ),
]


#: SMTP has no rate-limit answer of its own (a relay's 4xx is transient, and retried).
@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "smtp"], indirect=True)
async def test_a_rate_limit_answer_is_transient_and_pauses_the_shared_bucket(
    container: Container, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """Each of the provider's rate-limit answers (:data:`RATE_LIMITS`): the step's error is
    transient, and the credential's bucket (in the database, read by every worker) is
    paused: for the provider's wait when it said one, else for the default second."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="flowyard")
    key = _key(provider, "credential")
    cases = [case for case in RATE_LIMITS if case[0] == provider.name]
    assert cases
    for _, case, script, error_type, says_when in cases:
        await container.quotas.put(key, "100 per 1s", burst=100)  # a fresh bucket
        assert (await container.quotas.get(key)).bucket.paused_until is None
        slowdowns = _slowdowns(container)
        script(provider.fake)
        before = _now()

        detail = await run_definition(
            container,
            one_node(provider.node_type, provider.config),
            {**provider.input, "n": uuid.uuid4().hex},
        )

        [step] = detail.steps
        assert step.error is not None, (case, step.output)
        assert (step.error["type"], step.error["transient"]) == (error_type, True), case
        paused = (await container.quotas.get(key)).bucket.paused_until
        assert paused is not None and paused > before, case
        if says_when:
            assert paused > _now(), case  # the provider's wait (30 s or more)
            assert "retry_after_s" in step.error["details"], case
        assert _slowdowns(container) == slowdowns + 1, case
        assert_secret_free(stored_text(detail) + caplog.text, *provider.secrets())
        await container.quotas.delete(key)
