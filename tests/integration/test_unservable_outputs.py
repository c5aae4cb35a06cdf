"""What the outside world sends is stored so that the API can serve it: an HTTP response
with a lone surrogate, U+0000, NaN, an overflowing number or 900 levels of nesting, in a
successful answer or in an error's details, from a real local server, on both databases.

The rule (flowyard.worker.storable): characters are replaced by U+FFFD; a non-finite number
or too deep nesting in an output fails the step (``output.invalid``, ``output.too_deep``,
permanent, catchable); in error details they are repaired."""

from __future__ import annotations

from typing import Any

import pytest

from flowyard.bootstrap import Container
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.service import RunDetail
from support.api import API_ROOT, admin_client, assert_all_ok, read_everything
from support.http import RecordingServer, Reply
from support.runs import run_definition


def call(url: str, **node: Any) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "trigger", "next": "call"},
        {"id": "call", "type": "http", "config": {"url": url}, "next": "done", **node},
        {"id": "done", "type": "end", "config": {"output": "{{ steps.call.output.body }}"}},
    ]
    if "catch" in node:
        nodes.append(
            {
                "id": "caught",
                "type": "end",
                "config": {"output": {"caught": "{{ steps.call.error }}"}},
            }
        )
    return {"name": "call", "start": "start", "nodes": nodes}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def run_against(
    container: Container, server: RecordingServer, reply: Reply, **node: Any
) -> RunDetail:
    server.script("/x", [reply])
    return await run_definition(container, call(f"{server.url}/x", **node))


async def assert_servable(container: Container, run_id: str) -> dict[str, Any]:
    """Every read endpoint answers 200; the run detail as served."""
    async with admin_client(container, base_url=API_ROOT) as client:
        answers = await read_everything(client, run_id)
    assert_all_ok(answers)
    served: dict[str, Any] = answers["run"].json()
    return served


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"text": "a\\ud800b", "\\udfff": 1}', {"text": "a\ufffdb", "\ufffd": 1}),
        (b'{"text": "a\\u0000b"}', {"text": "a\ufffdb"}),
        (b'{"ok": "\\ud83d\\ude00"}', {"ok": "\U0001f600"}),
    ],
    ids=["lone-surrogate", "nul", "valid-pair"],
)
async def test_characters_are_replaced(
    container: Container, http_server: RecordingServer, body: bytes, expected: Any
) -> None:
    detail = await run_against(container, http_server, Reply(200, body))
    assert detail.run.status == RunStatus.SUCCEEDED, detail.run.error
    assert detail.run.output == expected
    served = await assert_servable(container, detail.run.id)
    assert served["output"] == expected
    step = next(s for s in served["steps"] if s["node_id"] == "call")
    assert step["output"]["body"] == expected


@pytest.mark.parametrize(
    ("body", "error_type", "pointer"),
    [
        (b'{"n": [1, NaN]}', "output.invalid", "/output/body/n/1"),
        (b'{"n": -Infinity}', "output.invalid", "/output/body/n"),
        (b'{"n": 1e999}', "output.invalid", "/output/body/n"),
        (b'{"d": ' + nested(900) + b"}", "output.too_deep", "/output/body/d/0/0"),
    ],
    ids=["nan", "minus-infinity", "overflow", "900-deep"],
)
async def test_unstorable_outputs_fail_the_step(
    container: Container,
    http_server: RecordingServer,
    body: bytes,
    error_type: str,
    pointer: str,
) -> None:
    detail = await run_against(container, http_server, Reply(200, body))
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error_type == error_type
    step = next(s for s in detail.steps if s.node_id == "call")
    assert step.status == StepStatus.FAILED
    assert step.attempt == 1  # permanent: no retry
    assert step.output is None
    assert step.error is not None
    assert step.error["details"]["pointer"].startswith(pointer)
    assert step.error["transient"] is False
    served = await assert_servable(container, detail.run.id)
    assert served["error"]["type"] == error_type


async def test_a_body_deeper_than_the_parser_fails_like_any_too_deep_output(
    container: Container, http_server: RecordingServer
) -> None:
    """Deeper than Python's JSON parser can go (RecursionError): the same permanent
    ``output.too_deep``, not an internal error retried in vain."""
    detail = await run_against(container, http_server, Reply(200, nested(5000)))
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error_type == "output.too_deep"
    step = next(s for s in detail.steps if s.node_id == "call")
    assert step.attempt == 1
    await assert_servable(container, detail.run.id)


async def test_an_unstorable_output_takes_the_catch_route(
    container: Container, http_server: RecordingServer
) -> None:
    detail = await run_against(
        container,
        http_server,
        Reply(200, b'{"n": NaN}'),
        catch=[{"errors": ["output.*"], "next": "caught"}],
    )
    assert detail.run.status == RunStatus.SUCCEEDED
    assert detail.run.output["caught"]["type"] == "output.invalid"
    await assert_servable(container, detail.run.id)


async def test_error_details_are_repaired(
    container: Container, http_server: RecordingServer
) -> None:
    """A 400 whose body (kept in the error's details) holds all of it: the step fails with
    its own error type, and the details are stored repaired."""
    body = b'{"s": "\\ud800", "n": NaN, "z": "\\u0000", "d": ' + nested(900) + b"}"
    detail = await run_against(container, http_server, Reply(400, body))
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error_type == "http.400"
    served = await assert_servable(container, detail.run.id)
    details = served["error"]["details"]["body"]
    assert details["s"] == details["z"] == "\ufffd"
    assert details["n"] is None
    depth, value = 0, details["d"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert value == "[truncated: nested deeper than 64 levels]"
    # details (depth 1) > body (2) > d (3): the lists at depths 3 to 64 are kept.
    assert depth == 62
    failed = [e for e in served["events"] if e["type"] == "step.failed"]
    assert failed[0]["data"]["error"]["details"]["body"]["n"] is None
