"""Built-in node types executed directly (no store): outputs and error classification."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from flowyard.domain.errors import PermanentError, TransientError
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.base import NodeOutcome, StepContext
from flowyard.nodes.httpio import parse_retry_after
from flowyard.nodes.registry import NodeRegistry, default_registry
from support.http import RecordingServer, Reply

REGISTRY = default_registry(load_plugins=False)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def ctx(client: httpx.AsyncClient, scope: dict[str, Any] | None = None) -> StepContext:
    return StepContext(
        run_id="run_1",
        workflow_id="wf_1",
        workflow_version=1,
        node_id="n",
        step_id=1,
        attempt=1,
        iteration=0,
        idempotency_key="run_1:n:0",
        scope=scope
        or {"input": {"region": "East Coast", "n": 2}, "vars": {}, "steps": {}, "run": {}},
        expressions=ExpressionEngine(),
        http=client,
    )


async def execute(
    client: httpx.AsyncClient,
    type_name: str,
    config: dict[str, Any],
    scope: dict[str, Any] | None = None,
) -> NodeOutcome:
    node = REGISTRY.get(type_name)
    assert node is not None
    return await node.execute(ctx(client, scope), node.parse_config(config))


async def test_http_success_output_and_idempotency_header(
    client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.script("/leads", [Reply(201, {"id": "001"})])
    out = await execute(
        client,
        "http",
        {
            "method": "POST",
            "url": f"{http_server.url}/leads",
            "json": {"region": "{{ input.region }}", "n": "{{ input.n * 2 }}"},
            "headers": {"X-Trace": "t-{{ input.n }}"},
        },
    )
    assert out.output["status"] == 201 and out.output["body"] == {"id": "001"}
    [req] = http_server.to("/leads")
    assert req.json() == {"region": "East Coast", "n": 4}
    assert req.headers["Idempotency-Key"] == "run_1:n:0"
    assert req.headers["X-Trace"] == "t-2"


async def test_http_idempotency_header_can_be_disabled(
    client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    await execute(client, "http", {"url": f"{http_server.url}/x", "idempotency_header": None})
    assert "Idempotency-Key" not in http_server.to("/x")[0].headers


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_http_transient_statuses(
    client: httpx.AsyncClient, http_server: RecordingServer, status: int
) -> None:
    http_server.script("/t", [Reply(status, {"e": 1}, headers={"Retry-After": "7"})])
    with pytest.raises(TransientError) as info:
        await execute(client, "http", {"url": f"{http_server.url}/t"})
    assert info.value.error_type == f"http.{status}"
    assert info.value.retry_after_s == 7.0
    assert info.value.info().transient


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_http_permanent_statuses(
    client: httpx.AsyncClient, http_server: RecordingServer, status: int
) -> None:
    http_server.script("/p", [Reply(status, {"error": "bad"})])
    with pytest.raises(PermanentError) as info:
        await execute(client, "http", {"url": f"{http_server.url}/p"})
    assert info.value.error_type == f"http.{status}"
    assert info.value.details["body"] == {"error": "bad"}


async def test_http_network_error_is_transient(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(TransientError) as info:
        await execute(client, "http", {"url": f"http://127.0.0.1:{port}/"})
    assert info.value.error_type == "http.network"


async def test_http_timeout_is_transient(
    client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.script("/slow", [Reply(200, delay_s=1.0)])
    with pytest.raises(TransientError) as info:
        await execute(client, "http", {"url": f"{http_server.url}/slow", "timeout_s": 0.1})
    assert info.value.error_type == "http.timeout"


@contextmanager
def dripping(size: int, interval_s: float) -> Iterator[str]:
    """A server answering one request with 200 and a ``size``-byte body sent one byte every
    ``interval_s`` (each read well within any read timeout); stops by itself."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(5)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n\r\n"
            try:
                conn.sendall(head.encode())
                for _ in range(size):
                    if stop.wait(interval_s):
                        return
                    conn.sendall(b"x")
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop.set()
        listener.close()
        thread.join(5)


async def test_http_timeout_is_a_deadline_for_the_whole_exchange(
    client: httpx.AsyncClient,
) -> None:
    """A body dripping one byte every 0.3 s never trips a per-read timeout of 0.5 s; the
    step's ``timeout_s`` still ends it (the old code waited the 3 s out and succeeded)."""
    with dripping(10, 0.3) as url:
        started = time.monotonic()
        with pytest.raises(TransientError) as info:
            await execute(client, "http", {"url": url, "timeout_s": 0.5})
        elapsed = time.monotonic() - started
    assert info.value.error_type == "http.timeout"
    assert elapsed < 2.0, elapsed


async def test_http_undecodable_body_is_permanent(
    client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.script("/gz", [Reply(200, b"not gzip at all", {"Content-Encoding": "gzip"})])
    with pytest.raises(PermanentError) as info:
        await execute(client, "http", {"url": f"{http_server.url}/gz"})
    assert info.value.error_type == "http.decoding"


async def test_http_response_size_is_bounded(
    client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.script("/big", [Reply(200, b"x" * 5000)])
    with pytest.raises(PermanentError) as info:
        await execute(client, "http", {"url": f"{http_server.url}/big", "max_response_bytes": 1000})
    assert info.value.error_type == "http.response_too_large"


async def test_http_invalid_url_is_permanent(client: httpx.AsyncClient) -> None:
    with pytest.raises(PermanentError):
        await execute(client, "http", {"url": "ftp://example.invalid/x"})


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_condition_first_true_case_wins_then_default(client: httpx.AsyncClient) -> None:
    config = {
        "cases": [
            {"when": "input.n > 5", "next": "big"},
            {"when": "input.region == 'East Coast'", "next": "east"},
        ],
        "default": "other",
    }
    assert (await execute(client, "condition", config)).next == "east"
    scope = {"input": {"region": "West", "n": 1}, "vars": {}, "steps": {}, "run": {}}
    assert (await execute(client, "condition", config, scope)).next == "other"


async def test_condition_without_match_or_default_fails_clearly(client: httpx.AsyncClient) -> None:
    with pytest.raises(PermanentError) as info:
        await execute(client, "condition", {"cases": [{"when": "input.n > 5", "next": "x"}]})
    assert info.value.error_type == "condition.no_match"


async def test_set_keeps_native_types(client: httpx.AsyncClient) -> None:
    out = await execute(
        client,
        "set",
        {"values": {"double": "{{ input.n * 2 }}", "text": "n={{ input.n }}", "const": [1, 2]}},
    )
    assert out.output == {"double": 4, "text": "n=2", "const": [1, 2]}


async def test_end_renders_output_and_fail_raises_configured_error(
    client: httpx.AsyncClient,
) -> None:
    out = await execute(client, "end", {"output": {"r": "{{ input.region }}"}})
    assert out.end and out.output == {"r": "East Coast"}
    with pytest.raises(PermanentError) as info:
        await execute(client, "fail", {"error": "lead.rejected", "message": "no {{ input.n }}"})
    assert (info.value.error_type, info.value.message) == ("lead.rejected", "no 2")


def test_registry_rejects_duplicates_and_describes_types() -> None:
    registry = NodeRegistry()
    node = REGISTRY.get("log")
    assert node is not None
    registry.register(node)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(node)
    [entry] = registry.describe()
    assert entry["type"] == "log" and "message" in entry["config_schema"]["properties"]
    assert set(REGISTRY.names()) >= {"trigger", "condition", "set", "http", "log", "end", "fail"}
