"""The ``example.discord`` node type, the way flowyard runs it: saved in a workflow, executed
by a worker, talking to a local Discord over a real socket."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flowyard_example_pack import DiscordNode
from flowyard_example_pack.discord import nonce
from flowyard_example_pack.testing import FakeDiscord, rate_limited, server_error

from conftest import BOT_TOKEN, CHANNEL, LOCKED_CHANNEL, add_bot, run, workflow
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType
from flowyard.domain.statuses import RunStatus


def message(**change: Any) -> dict[str, Any]:
    return {
        "credential": "discord-bot",
        "channel_id": CHANNEL,
        "content": "New lead: {{ input.email }}",
        **change,
    }


def error_of(detail: Any) -> dict[str, Any]:
    step = next(s for s in detail.steps if s.node_id == "post")
    assert step.error is not None, step.output
    return dict(step.error)


def test_the_type_describes_its_config_and_output() -> None:
    described = DiscordNode.describe()
    assert described["type"] == "example.discord"
    assert set(described["config_schema"]["required"]) == {"credential", "channel_id", "content"}
    assert set(described["output_schema"]["properties"]) == {"id", "channel_id", "timestamp"}


async def test_a_bad_config_is_refused_when_the_workflow_is_saved(container: Container) -> None:
    result = await container.service.validate(workflow(message(colour="red", mentions=["all"])))
    pointers = {p.pointer for p in result.problems}
    assert {"/nodes/0/config/colour", "/nodes/0/config/mentions/0"} <= pointers


async def test_a_message_is_posted_with_the_bot_token_and_a_stable_nonce(
    container: Container, discord: FakeDiscord
) -> None:
    await add_bot(container, discord)
    detail = await run(
        container, workflow(message(api_base=discord.api_base)), {"email": "ada@example.com"}
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [request] = discord.requests
    assert request["path"] == f"/api/v10/channels/{CHANNEL}/messages"
    assert request["headers"]["authorization"] == f"Bot {BOT_TOKEN}"
    body = json.loads(request["body"])
    assert body["content"] == "New lead: ada@example.com"
    assert body["enforce_nonce"] is True and len(body["nonce"]) == 25
    # No mention in rendered input notifies anyone unless the config allows it.
    assert body["allowed_mentions"] == {"parse": []}
    [posted] = discord.messages
    [step] = detail.steps
    assert step.output == {
        "id": posted.id,
        "channel_id": CHANNEL,
        "timestamp": posted.timestamp,
    }
    stored = json.dumps(
        [detail.run.output, [s.output for s in detail.steps], [e.data for e in detail.events]],
        default=str,
    )
    assert BOT_TOKEN not in stored


async def test_a_retry_after_a_lost_answer_does_not_post_twice(
    container: Container, discord: FakeDiscord
) -> None:
    await add_bot(container, discord)
    # Discord posts the message, then a proxy answers 502: the step is retried...
    discord.fail_next(server_error(502, after_post=True))
    detail = await run(
        container,
        workflow(
            message(api_base=discord.api_base),
            retry={"max_attempts": 2, "initial_interval_s": 0, "jitter": "none"},
        ),
        {"email": "ada@example.com"},
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    # ... with the same nonce, and Discord returns the message it already has.
    first, second = (json.loads(r["body"])["nonce"] for r in discord.requests)
    assert first == second
    assert len(discord.messages) == 1
    assert detail.steps[0].output["id"] == discord.messages[0].id


def test_nonces_differ_between_steps() -> None:
    assert nonce("run_1:post:0") != nonce("run_1:post:1") != nonce("run_2:post:0")


@pytest.mark.parametrize(
    ("change", "error_type", "sent"),
    [
        ({"channel_id": "1100000000000000999"}, "discord.10003", True),
        ({"channel_id": LOCKED_CHANNEL}, "discord.50013", True),
        ({"channel_id": "{{ input.email }}"}, "discord.invalid_config", False),
        ({"content": "{{ 'x' * 2001 }}"}, "discord.invalid_config", False),
    ],
)
async def test_refusals_are_permanent(
    container: Container,
    discord: FakeDiscord,
    change: dict[str, Any],
    error_type: str,
    sent: bool,
) -> None:
    await add_bot(container, discord)
    detail = await run(
        container, workflow(message(api_base=discord.api_base, **change)), {"email": "a@b.c"}
    )
    error = error_of(detail)
    assert (error["type"], error["transient"]) == (error_type, False)
    assert bool(discord.requests) is sent
    assert discord.messages == []


async def test_a_bad_token_is_permanent_and_stays_secret(
    container: Container, discord: FakeDiscord
) -> None:
    revoked = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.revoked.0000000000000000000000"
    await add_bot(container, discord, token=revoked)
    detail = await run(container, workflow(message(api_base=discord.api_base)), {"email": "x"})
    error = error_of(detail)
    assert (error["type"], error["transient"]) == ("discord.401", False)
    assert revoked not in json.dumps([s.error for s in detail.steps], default=str)


@pytest.mark.parametrize(
    ("answer", "error_type", "retry_after"),
    [
        (rate_limited(2.5), "discord.rate_limited", 2.5),
        (server_error(503), "discord.503", None),
    ],
)
async def test_rate_limits_and_discord_failures_are_transient(
    container: Container, discord: FakeDiscord, answer: Any, error_type: str, retry_after: Any
) -> None:
    await add_bot(container, discord)
    discord.fail_next(answer)
    detail = await run(container, workflow(message(api_base=discord.api_base)), {"email": "x"})
    error = error_of(detail)
    assert (error["type"], error["transient"]) == (error_type, True)
    assert error["details"].get("retry_after_s") == retry_after


async def test_a_workflow_routes_on_the_error_type(
    container: Container, discord: FakeDiscord
) -> None:
    await add_bot(container, discord)
    definition = workflow(
        message(api_base=discord.api_base, channel_id=LOCKED_CHANNEL),
        catch=[{"errors": ["discord.50013", "discord.10003"], "next": "fallback"}],
    )
    detail = await run(container, definition, {"email": "x"})
    assert detail.run.status is RunStatus.SUCCEEDED
    assert detail.run.output == "fallback"


async def test_the_token_goes_only_to_the_origins_its_credential_allows(
    container: Container, discord: FakeDiscord
) -> None:
    await add_bot(container, discord, origin="https://discord.com")
    detail = await run(container, workflow(message(api_base=discord.api_base)), {"email": "x"})
    assert error_of(detail)["type"] == "credential.origin_not_allowed"
    assert discord.requests == []


async def test_another_kind_of_credential_is_refused_before_sending(
    container: Container, discord: FakeDiscord
) -> None:
    await container.credentials.create(
        "discord-bot",
        CredentialType.BEARER,
        {"token": BOT_TOKEN},
        allowed_origins=[discord.origin],
    )
    detail = await run(container, workflow(message(api_base=discord.api_base)), {"email": "x"})
    assert error_of(detail)["type"] == "credential.type"
    assert discord.requests == []
