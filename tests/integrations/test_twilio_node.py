"""The sms and whatsapp node types against a local Twilio (tests/fakes/twilio.py), driven by a
real worker over real sockets: the wire protocol, every mapped error, garbage answers,
phone-number checks, credential type and origins, and secrets kept out of what is stored."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from fakes.fakehttp import html, huge, truncated_json
from fakes.twilio import FakeTwilio, too_many_requests, twilio_error
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType
from flowyard.domain.statuses import RunStatus
from flowyard.integrations.twilio import SmsNode
from support.chatflows import (
    assert_secret_free,
    basic,
    run_node,
    sqlite_db_url,
    step_error,
    stored_text,
)
from support.dbdump import dump_database

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-5f1e2d3c4b5a"
KEY_SID = "SK" + "fedcba9876543210" * 2
KEY_SECRET = "twilio-key-secret-9a8b7c6d5e4f"
SERVICE = "MG" + "00112233445566778899aabbccddeeff"


# The node and its provider under test, not the store: SQLite only (test_chat_worker.py runs
# end to end on both backends).
db_url = pytest.fixture(name="db_url")(sqlite_db_url)


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio(accounts={ACCOUNT: TOKEN}, api_keys={KEY_SID: (ACCOUNT, KEY_SECRET)})
    with fake:
        yield fake


async def add_twilio(container: Container, fake: FakeTwilio, name: str = "tw", **data: Any) -> None:
    values = {"account_sid": ACCOUNT, "auth_token": TOKEN, "base_url": fake.url, **data}
    await container.credentials.create(name, CredentialType.TWILIO, values)


def sms(**config: Any) -> dict[str, Any]:
    return {
        "credential": "tw",
        "to": "+14155550100",
        "from": "+14155550199",
        "body": "hi",
        **config,
    }


# -- success ---------------------------------------------------------------------------------


async def test_an_sms_is_posted_form_encoded_with_basic_auth(
    container: Container, twilio: FakeTwilio
) -> None:
    await add_twilio(container, twilio)
    detail = await run_node(
        container,
        "sms",
        sms(
            to="{{ input.phone }}",
            body="Hello {{ input.name }}",
            media_url=["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"],
            status_callback="https://hooks.example.com/twilio/status",
        ),
        {"phone": "+14155550123", "name": "Ada"},
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [request] = twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert request.headers["authorization"] == basic(ACCOUNT, TOKEN)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form() == {
        "To": ["+14155550123"],
        "From": ["+14155550199"],
        "Body": ["Hello Ada"],
        "MediaUrl": ["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"],
        "StatusCallback": ["https://hooks.example.com/twilio/status"],
    }
    # Twilio documents no idempotency key for creating a message: none is invented.
    assert not any("idempotency" in name for name in request.headers)
    [sent] = twilio.sent
    assert detail.steps[0].output == {
        "sid": sent["sid"],
        "status": "queued",
        "to": "+14155550123",
        "from": "+14155550199",
    }
    assert_secret_free(stored_text(detail), TOKEN)


async def test_an_api_key_authenticates_for_its_account(
    container: Container, twilio: FakeTwilio
) -> None:
    await add_twilio(container, twilio, auth_token=KEY_SECRET, api_key_sid=KEY_SID)
    detail = await run_node(container, "sms", sms())
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert request.headers["authorization"] == basic(KEY_SID, KEY_SECRET)
    assert_secret_free(stored_text(detail), KEY_SECRET)


async def test_a_messaging_service_picks_the_sender(
    container: Container, twilio: FakeTwilio
) -> None:
    await add_twilio(container, twilio)
    config = sms(messaging_service_sid=SERVICE)
    del config["from"]
    detail = await run_node(container, "sms", config)
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert twilio.requests[0].form()["MessagingServiceSid"] == [SERVICE]
    assert "From" not in twilio.requests[0].form()
    output = detail.steps[0].output
    assert output["status"] == "accepted" and output["from"] is None


@pytest.mark.parametrize("written", ["+447700900123", "whatsapp:+447700900123"])
async def test_whatsapp_addresses_get_their_prefix_once(
    container: Container, twilio: FakeTwilio, written: str
) -> None:
    await add_twilio(container, twilio)
    detail = await run_node(
        container, "whatsapp", sms(to=written, **{"from": "whatsapp:+14155238886"})
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    form = twilio.requests[0].form()
    assert form["To"] == ["whatsapp:+447700900123"]
    assert form["From"] == ["whatsapp:+14155238886"]
    assert detail.steps[0].output["to"] == "whatsapp:+447700900123"


# -- numbers and values checked before anything is sent ---------------------------------------


@pytest.mark.parametrize(
    ("node_type", "change", "error_type"),
    [
        ("sms", {"to": "4155550100"}, "twilio.invalid_number"),  # no +
        ("sms", {"to": "+0155550100"}, "twilio.invalid_number"),  # country code 0
        ("sms", {"to": "+1415555010012345"}, "twilio.invalid_number"),  # 16 digits
        ("sms", {"to": "+1 415 555 0100"}, "twilio.invalid_number"),
        ("sms", {"to": "{{ '' }}"}, "twilio.invalid_number"),  # renders empty
        ("sms", {"from": "not a sender!"}, "twilio.invalid_number"),
        ("whatsapp", {"from": "Acme"}, "twilio.invalid_number"),  # no sender IDs on WhatsApp
        ("sms", {"messaging_service_sid": "MG123"}, "twilio.invalid_config"),
        ("sms", {"media_url": ["ftp://x.example/a.png"]}, "twilio.invalid_config"),
        ("sms", {"status_callback": "/relative"}, "twilio.invalid_config"),
    ],
)
async def test_invalid_values_fail_before_sending(
    container: Container,
    twilio: FakeTwilio,
    node_type: str,
    change: dict[str, Any],
    error_type: str,
) -> None:
    await add_twilio(container, twilio)
    detail = await run_node(container, node_type, sms(**change))
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, False)
    assert twilio.calls == 0


async def test_an_alphanumeric_sender_id_is_an_sms_sender(
    container: Container, twilio: FakeTwilio
) -> None:
    await add_twilio(container, twilio)
    detail = await run_node(container, "sms", sms(**{"from": "Acme Shop"}))
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert twilio.requests[0].form()["From"] == ["Acme Shop"]


@pytest.mark.parametrize(
    "config",
    [
        {"credential": "tw", "to": "+14155550100", "body": "no sender"},
        {"credential": "tw", "to": "+14155550100", "from": "+14155550199"},  # no content
        {"credential": "tw", "to": "+1", "from": "+1", "body": "x", "extra": 1},
        {"credential": "Bad Name", "to": "+1", "from": "+1", "body": "x"},
    ],
)
def test_the_config_model_refuses_incomplete_messages(config: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SmsNode().parse_config(config)


# -- Twilio's errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "to", "error_type"),
    [
        ("unsubscribed", "+14155550111", "twilio.21610"),
        ("disabled", "+2250700000000", "twilio.21408"),
        ("invalid", "+999", "twilio.21211"),
    ],
)
async def test_twilio_refusals_are_permanent(
    container: Container, twilio: FakeTwilio, setup: str, to: str, error_type: str
) -> None:
    twilio.unsubscribed.add("+14155550111")
    twilio.disabled_prefixes.add("+225")
    await add_twilio(container, twilio)
    if setup == "invalid":
        # E.164 in form but not a number Twilio can reach: only Twilio can say so.
        twilio.fail_next(twilio_error(21211, f"Invalid 'To' Phone Number: {to}"))
    detail = await run_node(container, "sms", sms(to=to))
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, False)
    code = int(error_type.split(".")[1])
    assert error["details"]["code"] == code and error["details"]["status"] == 400
    assert error["details"]["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert twilio.sent == []


async def test_outside_the_whatsapp_window_is_permanent(
    container: Container, twilio: FakeTwilio
) -> None:
    await add_twilio(container, twilio)
    twilio.fail_next(
        twilio_error(
            63016,
            "Failed to send freeform message because you are outside the allowed window. "
            "If you are using WhatsApp, please use a Message Template.",
        )
    )
    detail = await run_node(
        container,
        "whatsapp",
        sms(**{"from": "+14155238886"}),
        retry={"max_attempts": 3, "initial_interval_s": 0.01},
        catch=[{"errors": ["twilio.63016"], "next": "caught"}],
    )
    assert detail.run.status is RunStatus.SUCCEEDED  # routed by catch
    assert detail.run.output == "caught"
    assert twilio.calls == 1  # not retried
    assert "24-hour" in step_error(detail)["message"]


async def test_a_wrong_auth_token_is_twilio_20003(container: Container, twilio: FakeTwilio) -> None:
    await add_twilio(container, twilio, auth_token="not-the-right-token-123")
    detail = await run_node(container, "sms", sms())
    error = step_error(detail)
    assert (error["type"], error["transient"], error["details"]["status"]) == (
        "twilio.20003",
        False,
        401,
    )
    assert twilio.sent == []


@pytest.mark.parametrize(
    ("answer", "error_type", "retry_after"),
    [
        (too_many_requests(17), "twilio.20429", 17.0),
        (twilio_error(20500, "Internal Server Error", status=500), "twilio.20500", None),
        (twilio_error(20003, "Service Unavailable", status=503), "twilio.20003", None),
    ],
)
async def test_rate_limits_and_server_errors_are_transient(
    container: Container, twilio: FakeTwilio, answer: Any, error_type: str, retry_after: Any
) -> None:
    await add_twilio(container, twilio)
    twilio.fail_next(answer)
    detail = await run_node(container, "sms", sms())
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, True)
    assert error["details"].get("retry_after_s") == retry_after


async def test_a_transient_failure_is_retried_and_then_sends(
    container: Container, twilio: FakeTwilio
) -> None:
    await add_twilio(container, twilio)
    twilio.fail_next(too_many_requests(0), twilio_error(20500, "Internal Server Error", 500))
    detail = await run_node(
        container, "sms", sms(), retry={"max_attempts": 3, "initial_interval_s": 0.01}
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert twilio.calls == 3 and len(twilio.sent) == 1
    assert detail.steps[0].attempt == 3


# -- garbage answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error_type", "transient"),
    [
        (html(502), "twilio.502", True),
        (html(400, "Bad Request"), "twilio.400", False),
        (html(200, "OK"), "twilio.invalid_response", False),
        (truncated_json(201), "twilio.invalid_response", False),
        (truncated_json(500), "twilio.500", True),
        (huge(201), "twilio.response_too_large", False),
    ],
)
async def test_garbage_answers_are_classified(
    container: Container, twilio: FakeTwilio, answer: Any, error_type: str, transient: bool
) -> None:
    await add_twilio(container, twilio)
    twilio.fail_next(answer)
    detail = await run_node(container, "sms", sms())
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, transient)
    assert len(stored_text(detail)) < 64 * 1024  # a huge body is not stored


# -- credentials -----------------------------------------------------------------------------


async def test_another_credential_type_is_refused(container: Container, twilio: FakeTwilio) -> None:
    await container.credentials.create(
        "tw", CredentialType.SLACK, {"bot_token": "xoxb-not-twilio-000", "base_url": twilio.url}
    )
    detail = await run_node(container, "sms", sms())
    error = step_error(detail)
    assert (error["type"], error["transient"]) == ("credential.type", False)
    assert error["details"] == {"credential": "tw", "type": "slack", "expected": "twilio"}
    assert twilio.calls == 0


async def test_a_base_url_outside_the_allowed_origins_is_refused(
    container: Container, twilio: FakeTwilio
) -> None:
    await container.credentials.create(
        "tw",
        CredentialType.TWILIO,
        {"account_sid": ACCOUNT, "auth_token": TOKEN, "base_url": twilio.url},
        allowed_origins=["https://api.twilio.com"],
    )
    detail = await run_node(container, "sms", sms())
    error = step_error(detail)
    assert (error["type"], error["transient"]) == ("credential.origin_not_allowed", False)
    assert twilio.calls == 0


async def test_secrets_echoed_by_twilio_are_nowhere_stored_or_logged(
    container: Container, twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_twilio(container, twilio)
    header = basic(ACCOUNT, TOKEN)
    twilio.fail_next(
        twilio_error(20003, f"token {TOKEN} rejected; you sent {header}", status=401),
        too_many_requests(0),
    )
    failed = await run_node(container, "sms", sms())
    assert step_error(failed)["type"] == "twilio.20003"
    assert "***" in step_error(failed)["details"]["message"]
    retried = await run_node(container, "sms", sms(), retry={"max_attempts": 2})
    assert retried.run.status is RunStatus.SUCCEEDED
    for detail in (failed, retried):
        assert_secret_free(stored_text(detail), TOKEN, header.removeprefix("Basic "))
    assert_secret_free(caplog.text, TOKEN, header.removeprefix("Basic "))
    dump = await dump_database(container.settings.db_url)
    assert TOKEN not in dump and header.removeprefix("Basic ") not in dump
