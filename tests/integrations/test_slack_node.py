"""The slack node type against a local Slack (tests/fakes/slack.py), driven by a real worker
over real sockets: chat.postMessage's protocol, Slack's 200-with-ok-false errors, the 429
rate limit, garbage answers, the credential's type and origins, and the bot token kept out
of what is stored and logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from fakes.fakehttp import html, huge, truncated_json
from fakes.slack import Channel, FakeSlack, rate_limited, slack_error
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType
from flowyard.domain.statuses import RunStatus
from flowyard.integrations.slack import SlackNode
from support.chatflows import assert_secret_free, run_node, sqlite_db_url, step_error, stored_text
from support.dbdump import dump_database

BOT_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"


# The node and its provider under test, not the store: SQLite only (test_chat_worker.py runs
# end to end on both backends).
db_url = pytest.fixture(name="db_url")(sqlite_db_url)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(
        tokens={BOT_TOKEN: "T0001"},
        channels=[
            Channel("C0GENERAL", "general"),
            Channel("C0SECRET", "secret", member=False),
            Channel("C0OLD", "old", archived=True),
        ],
    )
    with fake:
        yield fake


async def add_slack(container: Container, fake: FakeSlack, token: str = BOT_TOKEN) -> None:
    await container.credentials.create(
        "bot", CredentialType.SLACK, {"bot_token": token, "base_url": fake.url}
    )


def message(**config: Any) -> dict[str, Any]:
    return {"credential": "bot", "channel": "C0GENERAL", "text": "Deploy done", **config}


async def test_a_message_is_posted_as_json_with_the_bot_token(
    container: Container, slack: FakeSlack
) -> None:
    await add_slack(container, slack)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*{{ input.who }}* said hi"}}]
    detail = await run_node(
        container,
        "slack",
        message(text="Hi from {{ input.who }}", blocks=blocks, thread_ts="1503435956.000247"),
        {"who": "Ada"},
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [request] = slack.requests
    assert (request.method, request.path) == ("POST", "/api/chat.postMessage")
    assert request.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.json() == {
        "channel": "C0GENERAL",
        "text": "Hi from Ada",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Ada* said hi"}}],
        "thread_ts": "1503435956.000247",
    }
    [posted] = slack.posted
    assert detail.steps[0].output == {"ts": posted["ts"], "channel": "C0GENERAL"}
    assert_secret_free(stored_text(detail), BOT_TOKEN)


async def test_a_channel_name_answers_with_its_id(container: Container, slack: FakeSlack) -> None:
    await add_slack(container, slack)
    detail = await run_node(container, "slack", message(channel="#general"))
    assert detail.steps[0].output["channel"] == "C0GENERAL"


@pytest.mark.parametrize(
    ("change", "error_type"),
    [
        ({"channel": "C0NOPE"}, "slack.channel_not_found"),
        ({"channel": "C0SECRET"}, "slack.not_in_channel"),
        ({"channel": "old"}, "slack.is_archived"),
        ({"text": "x" * 40_001}, "slack.msg_too_long"),
        ({"text": "{{ '' }}"}, "slack.no_text"),
    ],
)
async def test_slack_refusals_are_permanent(
    container: Container, slack: FakeSlack, change: dict[str, Any], error_type: str
) -> None:
    await add_slack(container, slack)
    detail = await run_node(container, "slack", message(**change))
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, False)
    assert error["details"]["status"] == 200
    assert slack.posted == []


@pytest.mark.parametrize(("token", "error_type"), [("xoxb-revoked-0000000", "slack.invalid_auth")])
async def test_a_bad_token_is_invalid_auth(
    container: Container, slack: FakeSlack, token: str, error_type: str
) -> None:
    await add_slack(container, slack, token)
    detail = await run_node(container, "slack", message())
    assert step_error(detail)["type"] == error_type
    assert slack.requests[0].headers["authorization"] == f"Bearer {token}"
    assert_secret_free(stored_text(detail), token)


@pytest.mark.parametrize(
    ("answer", "error_type", "retry_after"),
    [
        (rate_limited(12), "slack.ratelimited", 12.0),
        (slack_error("internal_error"), "slack.internal_error", None),
        (slack_error("fatal_error"), "slack.fatal_error", None),
        (slack_error("service_unavailable", 503), "slack.service_unavailable", None),
        (slack_error("request_timeout"), "slack.request_timeout", None),
        (html(429, "Too Many Requests"), "slack.ratelimited", None),
    ],
)
async def test_rate_limits_and_slack_failures_are_transient(
    container: Container, slack: FakeSlack, answer: Any, error_type: str, retry_after: Any
) -> None:
    await add_slack(container, slack)
    slack.fail_next(answer)
    detail = await run_node(container, "slack", message())
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, True)
    assert error["details"].get("retry_after_s") == retry_after


async def test_a_rate_limited_post_is_retried(container: Container, slack: FakeSlack) -> None:
    await add_slack(container, slack)
    slack.fail_next(rate_limited(0))
    detail = await run_node(
        container, "slack", message(), retry={"max_attempts": 2, "initial_interval_s": 0.01}
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert (slack.calls, len(slack.posted)) == (2, 1)


@pytest.mark.parametrize(
    ("answer", "error_type", "transient"),
    [
        (html(502), "slack.502", True),
        (html(200, "OK"), "slack.invalid_response", False),
        (truncated_json(200), "slack.invalid_response", False),
        (huge(200), "slack.response_too_large", False),
        (slack_error("Not An Error Code!"), "slack.invalid_response", False),
        (html(404, "Not Found"), "slack.404", False),
    ],
)
async def test_garbage_answers_are_classified(
    container: Container, slack: FakeSlack, answer: Any, error_type: str, transient: bool
) -> None:
    await add_slack(container, slack)
    slack.fail_next(answer)
    detail = await run_node(container, "slack", message())
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, transient)


async def test_an_invalid_thread_ts_is_refused_before_sending(
    container: Container, slack: FakeSlack
) -> None:
    await add_slack(container, slack)
    detail = await run_node(container, "slack", message(thread_ts="yesterday"))
    assert step_error(detail)["type"] == "slack.invalid_config"
    assert slack.calls == 0


def test_a_message_needs_text_or_blocks() -> None:
    with pytest.raises(pydantic.ValidationError):
        SlackNode().parse_config({"credential": "bot", "channel": "C1"})
    assert SlackNode().parse_config({"credential": "bot", "channel": "C1", "blocks": [{}]})


async def test_another_credential_type_is_refused(container: Container, slack: FakeSlack) -> None:
    await container.credentials.create(
        "bot",
        CredentialType.BEARER,
        {"token": BOT_TOKEN},
        allowed_origins=[slack.url],
    )
    detail = await run_node(container, "slack", message())
    error = step_error(detail)
    assert (error["type"], error["details"]["type"]) == ("credential.type", "bearer")
    assert slack.calls == 0


async def test_a_base_url_outside_the_allowed_origins_is_refused(
    container: Container, slack: FakeSlack
) -> None:
    await container.credentials.create(
        "bot",
        CredentialType.SLACK,
        {"bot_token": BOT_TOKEN, "base_url": slack.url},
        allowed_origins=["https://slack.com"],
    )
    detail = await run_node(container, "slack", message())
    assert step_error(detail)["type"] == "credential.origin_not_allowed"
    assert slack.calls == 0


async def test_an_echoed_token_is_nowhere_stored_or_logged(
    container: Container, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_slack(container, slack)
    slack.fail_next(
        slack_error("invalid_auth"),
        html(503, f"upstream refused Bearer {BOT_TOKEN}"),
    )
    first = await run_node(container, "slack", message())
    second = await run_node(container, "slack", message())
    assert step_error(first)["type"] == "slack.invalid_auth"
    assert step_error(second)["type"] == "slack.503"
    assert "Bearer ***" in str(step_error(second)["details"]["body"])
    for detail in (first, second):
        assert_secret_free(stored_text(detail), BOT_TOKEN)
    assert_secret_free(caplog.text, BOT_TOKEN)
    assert BOT_TOKEN not in await dump_database(container.settings.db_url)
