"""The instagram node type against a local Meta Graph API (tests/fakes/graph.py), driven by a
real worker over real sockets: its four operations, Graph's error codes (rate limits, the
24-hour window, tokens, permissions), garbage answers, the credential's type and origins,
and the access token kept out of what is stored and logged."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from fakes.fakehttp import html, huge, truncated_json
from fakes.graph import FakeGraph, graph_error, rate_limited
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType
from flowyard.domain.statuses import RunStatus
from flowyard.integrations.meta import InstagramNode
from support.chatflows import assert_secret_free, run_node, sqlite_db_url, step_error, stored_text
from support.dbdump import dump_database

ACCESS_TOKEN = "EAAGm0PX4ZCpsBAKZCtestaccesstoken0123456789"
ACCOUNT = "17841400000000001"
PERSON, LATE_PERSON = "1234567890123456", "6543210987654321"
MEDIA, COMMENT = "17895695668004550", "17873440459141021"


# The node and its provider under test, not the store: SQLite only (test_chat_worker.py runs
# end to end on both backends).
db_url = pytest.fixture(name="db_url")(sqlite_db_url)


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    fake = FakeGraph(
        token=ACCESS_TOKEN,
        account_id=ACCOUNT,
        open_window={PERSON},
        closed_window={LATE_PERSON},
        media={MEDIA},
        comments={COMMENT},
    )
    with fake:
        yield fake


async def add_graph(container: Container, fake: FakeGraph, token: str = ACCESS_TOKEN) -> None:
    await container.credentials.create(
        "ig",
        CredentialType.META_GRAPH,
        {"access_token": token, "account_id": ACCOUNT, "base_url": fake.url},
    )


def dm(**config: Any) -> dict[str, Any]:
    return {
        "credential": "ig",
        "operation": "send_message",
        "recipient_id": PERSON,
        "text": "Thanks for your message!",
        **config,
    }


async def test_send_message_posts_to_the_account_messages_edge(
    container: Container, graph: FakeGraph
) -> None:
    await add_graph(container, graph)
    detail = await run_node(
        container,
        "instagram",
        dm(recipient_id="{{ input.sender }}", text="Hi {{ input.name }}"),
        {"sender": PERSON, "name": "Ada"},
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [request] = graph.requests
    assert (request.method, request.path) == ("POST", f"/v21.0/{ACCOUNT}/messages")
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.query == {}  # the token is not in the URL
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"recipient": {"id": PERSON}, "message": {"text": "Hi Ada"}}
    [sent] = graph.messages
    assert detail.steps[0].output == {
        "operation": "send_message",
        "id": sent["id"],
        "recipient_id": PERSON,
        "success": True,
    }
    assert_secret_free(stored_text(detail), ACCESS_TOKEN)


async def test_reply_hide_and_like(container: Container, graph: FakeGraph) -> None:
    await add_graph(container, graph)
    base = {"credential": "ig"}
    reply = await run_node(
        container,
        "instagram",
        {**base, "operation": "reply_to_comment", "comment_id": COMMENT, "text": "Thank you!"},
    )
    assert reply.run.status is RunStatus.SUCCEEDED, reply.run.error
    assert reply.steps[0].output["id"] == graph.replies[0]["id"]
    assert graph.requests[-1].path == f"/v21.0/{COMMENT}/replies"
    assert graph.requests[-1].json() == {"message": "Thank you!"}

    hide = await run_node(
        container, "instagram", {**base, "operation": "hide_comment", "comment_id": COMMENT}
    )
    assert hide.steps[0].output == {
        "operation": "hide_comment",
        "id": None,
        "recipient_id": None,
        "success": True,
    }
    assert graph.requests[-1].path == f"/v21.0/{COMMENT}"
    assert graph.hidden == {COMMENT: True}
    await run_node(
        container,
        "instagram",
        {**base, "operation": "hide_comment", "comment_id": COMMENT, "hide": False},
    )
    assert graph.hidden == {COMMENT: False}

    for target, value in (("media_id", MEDIA), ("comment_id", COMMENT)):
        like = await run_node(container, "instagram", {**base, "operation": "like", target: value})
        assert like.run.status is RunStatus.SUCCEEDED, like.run.error
        assert graph.requests[-1].path == f"/v21.0/{ACCOUNT}/likes"
        assert graph.requests[-1].json() == {target: value}
    assert graph.likes == [("media", MEDIA), ("comment", COMMENT)]
    assert all(r.headers["authorization"] == f"Bearer {ACCESS_TOKEN}" for r in graph.requests)


@pytest.mark.parametrize(
    "config",
    [
        {"operation": "send_message", "recipient_id": PERSON},  # no text
        {"operation": "send_message", "text": "x"},  # no recipient
        {"operation": "reply_to_comment", "comment_id": COMMENT},
        {"operation": "hide_comment"},
        {"operation": "like"},
        {"operation": "like", "media_id": MEDIA, "comment_id": COMMENT},
        {"operation": "hide_comment", "comment_id": COMMENT, "text": "unused"},
        {"operation": "follow", "recipient_id": PERSON},
    ],
)
def test_each_operation_takes_its_own_fields(config: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        InstagramNode().parse_config({"credential": "ig", **config})


async def test_an_id_that_is_not_numeric_is_refused_before_sending(
    container: Container, graph: FakeGraph
) -> None:
    await add_graph(container, graph)
    detail = await run_node(container, "instagram", dm(recipient_id="me/feed"))
    error = step_error(detail)
    assert (error["type"], error["details"]["field"]) == (
        "instagram.invalid_config",
        "recipient_id",
    )
    assert graph.calls == 0


async def test_outside_the_24_hour_window_is_permanent(
    container: Container, graph: FakeGraph
) -> None:
    await add_graph(container, graph)
    detail = await run_node(
        container,
        "instagram",
        dm(recipient_id=LATE_PERSON),
        retry={"max_attempts": 3, "initial_interval_s": 0.01},
        catch=[{"errors": ["instagram.10_2018278"], "next": "caught"}],
    )
    assert detail.run.output == "caught"
    error = step_error(detail)
    assert (error["type"], error["transient"]) == ("instagram.10_2018278", False)
    assert error["details"]["code"] == 10 and error["details"]["subcode"] == 2018278
    assert "24-hour" in error["message"]
    assert graph.calls == 1


@pytest.mark.parametrize(
    ("setup", "error_type"),
    [
        ("bad_token", "instagram.190"),
        ("unknown_person", "instagram.100_2018001"),
        ("unknown_comment", "instagram.100_33"),
        ("permission", "instagram.10"),
        ("permission_200", "instagram.200"),
        ("unavailable", "instagram.551"),
    ],
)
async def test_graph_refusals_are_permanent(
    container: Container, graph: FakeGraph, setup: str, error_type: str
) -> None:
    await add_graph(
        container, graph, "EAAwrongtoken00000000" if setup == "bad_token" else ACCESS_TOKEN
    )
    config = dm()
    if setup == "unknown_person":
        config = dm(recipient_id="999")
    elif setup == "unknown_comment":
        config = {
            "credential": "ig",
            "operation": "reply_to_comment",
            "comment_id": "42",
            "text": "x",
        }
    elif setup == "permission":
        graph.fail_next(
            graph_error(10, "(#10) Application does not have permission for this action")
        )
    elif setup == "permission_200":
        graph.fail_next(
            graph_error(200, "(#200) Requires instagram_manage_messages permission", status=403)
        )
    elif setup == "unavailable":
        graph.fail_next(graph_error(551, "This person isn't available right now.", subcode=1545041))
        error_type = "instagram.551_1545041"
    detail = await run_node(container, "instagram", config)
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, False)
    assert error["details"]["fbtrace_id"]
    assert graph.messages == [] and graph.replies == []


@pytest.mark.parametrize(
    ("answer", "error_type", "retry_after"),
    [
        (rate_limited(4), "instagram.4", None),
        (rate_limited(17), "instagram.17", None),
        (rate_limited(32), "instagram.32", None),
        (rate_limited(613), "instagram.613", None),
        (rate_limited(4, regain_minutes=5), "instagram.4", 300.0),
        (graph_error(1, "An unknown error occurred", subcode=99), "instagram.1_99", None),
        (graph_error(2, "Service temporarily unavailable", status=500), "instagram.2", None),
        (
            graph_error(1200, "Temporary send message failure. Please try again later."),
            "instagram.1200",
            None,
        ),
        (graph_error(9999, "Something odd", is_transient=True), "instagram.9999", None),
    ],
)
async def test_rate_limits_and_service_errors_are_transient(
    container: Container, graph: FakeGraph, answer: Any, error_type: str, retry_after: Any
) -> None:
    await add_graph(container, graph)
    graph.fail_next(answer)
    detail = await run_node(container, "instagram", dm())
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, True)
    assert error["details"].get("retry_after_s") == retry_after


@pytest.mark.parametrize(
    ("answer", "error_type", "transient"),
    [
        (html(502), "instagram.502", True),
        (html(400, "Bad Request"), "instagram.400", False),
        (html(200, "OK"), "instagram.invalid_response", False),
        (truncated_json(200), "instagram.invalid_response", False),
        (huge(200), "instagram.response_too_large", False),
    ],
)
async def test_garbage_answers_are_classified(
    container: Container, graph: FakeGraph, answer: Any, error_type: str, transient: bool
) -> None:
    await add_graph(container, graph)
    graph.fail_next(answer)
    detail = await run_node(container, "instagram", dm())
    error = step_error(detail)
    assert (error["type"], error["transient"]) == (error_type, transient)


async def test_another_credential_type_is_refused(container: Container, graph: FakeGraph) -> None:
    await container.credentials.create(
        "ig", CredentialType.BEARER, {"token": ACCESS_TOKEN}, allowed_origins=[graph.url]
    )
    detail = await run_node(container, "instagram", dm())
    assert step_error(detail)["type"] == "credential.type"
    assert graph.calls == 0


async def test_a_base_url_outside_the_allowed_origins_is_refused(
    container: Container, graph: FakeGraph
) -> None:
    await container.credentials.create(
        "ig",
        CredentialType.META_GRAPH,
        {"access_token": ACCESS_TOKEN, "account_id": ACCOUNT, "base_url": graph.url},
        allowed_origins=["https://graph.facebook.com"],
    )
    detail = await run_node(container, "instagram", dm())
    assert step_error(detail)["type"] == "credential.origin_not_allowed"
    assert graph.calls == 0


async def test_an_echoed_token_is_nowhere_stored_or_logged(
    container: Container, graph: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_graph(container, graph)
    graph.fail_next(
        graph_error(190, f"Error validating access token {ACCESS_TOKEN}: session expired"),
        rate_limited(4),
    )
    first = await run_node(container, "instagram", dm())
    second = await run_node(container, "instagram", dm(), retry={"max_attempts": 2})
    assert step_error(first)["type"] == "instagram.190"
    assert "***" in step_error(first)["details"]["message"]
    assert second.run.status is RunStatus.SUCCEEDED
    for detail in (first, second):
        assert_secret_free(stored_text(detail), ACCESS_TOKEN)
    assert_secret_free(caplog.text, ACCESS_TOKEN)
    assert ACCESS_TOKEN not in await dump_database(container.settings.db_url)
    assert json.dumps(second.steps[0].output)  # the output is plain JSON
