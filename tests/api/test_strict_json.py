"""Strict JSON at the API edge: every JSON body refuses lone surrogates, U+0000, NaN,
Infinity, overflowing numbers, duplicate keys and nesting deeper than 64 levels (422
problem+json with a JSON pointer), and nothing of such a request is stored. On SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import params, routing
from fastapi.routing import APIRoute

from flowyard.api import create_app
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.bootstrap import Container
from flowyard.domain import jsonvalue
from flowyard.domain.auth import Role
from flowyard.domain.errors import InvalidInput
from flowyard.settings import Settings
from support.auth import auth_headers

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
JSON = {"content-type": "application/json"}

HELLO: dict[str, Any] = {
    "name": "hello",
    "start": "start",
    "input_schema": {"type": "object"},
    "nodes": [
        {"id": "start", "type": "trigger", "next": "wait"},
        {"id": "wait", "type": "wait_for_signal", "config": {"signal": "go"}, "next": "done"},
        {"id": "done", "type": "end"},
    ],
}


def nested(depth: int) -> str:
    """JSON text of a value nested ``depth`` levels deep."""
    return "[" * depth + "]" * depth


#: (name, JSON text of a bad value, problem code, where inside the value the problem is)
BAD_VALUES = [
    ("lone-surrogate", '{"x": "a\\ud800b"}', "lone_surrogate", "/x"),
    ("lone-surrogate-key", '{"\\udc00": 1}', "lone_surrogate", "/\ufffd"),
    ("nul", '{"x": "a\\u0000"}', "nul_character", "/x"),
    ("nan", '{"x": [1, NaN]}', "non_finite_number", "/x/1"),
    ("infinity", '{"x": Infinity}', "non_finite_number", "/x"),
    ("minus-infinity", '{"x": -Infinity}', "non_finite_number", "/x"),
    ("overflow", '{"x": 1e999}', "non_finite_number", "/x"),
    ("deep", '{"x": ' + nested(900) + "}", "too_deep", "/x/0/0"),
    ("big-integer", '{"x": [0, 1' + "0" * 4300 + "]}", "integer_too_large", "/x/1"),
    ("duplicate-key", '{"x": {"k": 1, "k": 2}}', "duplicate_key", "/x"),
]
BAD_IDS = [case[0] for case in BAD_VALUES]


def _app(container: Container) -> Any:
    return create_app(container=container)


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(container)),
        base_url="http://test",
        headers=await auth_headers(container),
    ) as c:
        yield c


def assert_refused(response: httpx.Response, code: str, pointer_prefix: str) -> dict[str, Any]:
    """A 422 problem naming ``code`` at a pointer that starts with ``pointer_prefix``."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/invalid-input")
    [error] = body["errors"]
    assert error["code"] == code
    assert error["pointer"].startswith(pointer_prefix), error
    assert error["pointer"] in body["detail"]
    return body


# -- every route --------------------------------------------------------------------------


def api_routes(settings: Settings) -> list[tuple[str, APIRoute]]:
    """(path, route) of every HTTP route of the app (routers are included lazily: walk their
    contexts, as FastAPI does)."""
    app = create_app(settings)
    routes = [
        (ctx.path, ctx.original_route)
        for ctx in routing.iter_route_contexts(app.routes)
        if isinstance(ctx.original_route, APIRoute)
    ]
    assert len(routes) > 20
    return routes


def json_body_routes(settings: Settings) -> list[tuple[str, APIRoute]]:
    """The routes of the app that read a JSON body."""
    return [
        (path, route)
        for path, route in api_routes(settings)
        if route.body_field is not None and not isinstance(route.body_field.field_info, params.Form)
    ]


def test_every_route_parses_json_strictly(tmp_path: Path) -> None:
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'f.db'}", workers=0)
    loose = [
        f"{sorted(route.methods)} {path}"
        for path, route in api_routes(settings)
        if not isinstance(route, StrictJSONRoute)
    ]
    assert loose == [], "routers must be APIRouter(route_class=StrictJSONRoute)"
    paths = {path for path, _ in json_body_routes(settings)}
    # The bodies the issue names, at least: inputs, signals, definitions, vars, credentials.
    assert {
        f"{API}/workflows",
        f"{API}/workflows/{{workflow_ref}}",
        f"{API}/workflows/validate",
        f"{API}/workflows/{{workflow_ref}}/runs",
        f"{API}/runs/{{run_id}}/signals/{{name}}",
        f"{API}/runs/{{run_id}}/actions/{{action}}",
        f"{API}/credentials",
    } <= paths


async def test_every_json_route_refuses_a_lone_surrogate(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Each route with a JSON body, called with a lone surrogate: 422 with its pointer (the
    body is refused before the route looks at ids in the path, which are made up here)."""
    for path, route in json_body_routes(settings):
        url = re.sub(r"\{[^}]+\}", "x", path)
        for method in sorted(route.methods):
            response = await client.request(
                method, url, content=b'{"name": "\\ud800"}', headers=JSON
            )
            assert response.status_code == 422, (method, path, response.text)
            assert response.json()["errors"][0]["pointer"] == "/name", (method, path)


# -- nothing is stored --------------------------------------------------------------------


async def _create(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/workflows", json=HELLO)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(("name", "bad", "code", "where"), BAD_VALUES, ids=BAD_IDS)
async def test_run_input_and_vars_are_refused(
    client: httpx.AsyncClient, name: str, bad: str, code: str, where: str
) -> None:
    await _create(client)
    for field in ("input", "vars"):
        body = '{"%s": %s}' % (field, bad)  # noqa: UP031 - JSON text, not a format string
        response = await client.post(
            f"{API}/workflows/hello/runs", content=body.encode(), headers=JSON
        )
        assert_refused(response, code, f"/{field}{where}")
    listed = await client.get(f"{API}/runs")
    assert listed.status_code == 200
    assert listed.json()["items"] == []


@pytest.mark.parametrize(("name", "bad", "code", "where"), BAD_VALUES, ids=BAD_IDS)
async def test_signal_payloads_are_refused(
    client: httpx.AsyncClient, name: str, bad: str, code: str, where: str
) -> None:
    await _create(client)
    started = await client.post(f"{API}/workflows/hello/runs", json={"input": {}})
    run_id = started.json()["id"]
    response = await client.post(
        f"{API}/runs/{run_id}/signals/go", content=bad.encode(), headers=JSON
    )
    assert_refused(response, code, where)
    signals = await client.get(f"{API}/runs/{run_id}/signals")
    assert signals.status_code == 200
    assert signals.json()["items"] == []


@pytest.mark.parametrize(("name", "bad", "code", "where"), BAD_VALUES, ids=BAD_IDS)
async def test_definitions_are_refused(
    client: httpx.AsyncClient, name: str, bad: str, code: str, where: str
) -> None:
    definition = json.dumps({**HELLO, "name": "bad", "vars": {"v": "placeholder"}})
    body = definition.replace('"placeholder"', bad).encode()
    for method, path in (
        ("POST", f"{API}/workflows"),
        ("POST", f"{API}/workflows/validate"),
        ("PUT", f"{API}/workflows/bad"),
    ):
        response = await client.request(method, path, content=body, headers=JSON)
        assert_refused(response, code, f"/vars/v{where}")
    missing = await client.get(f"{API}/workflows/bad")
    assert missing.status_code == 404


async def test_nesting_up_to_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    """64 levels in all, counting the body object: the input holds 62 more."""
    await _create(client)
    body = '{"input": {"x": ' + nested(62) + "}}"
    ok = await client.post(f"{API}/workflows/hello/runs", content=body.encode(), headers=JSON)
    assert ok.status_code == 202, ok.text
    body = '{"input": {"x": ' + nested(63) + "}}"
    deep = await client.post(f"{API}/workflows/hello/runs", content=body.encode(), headers=JSON)
    assert_refused(deep, "too_deep", "/input/x/0")
    run = await client.get(f"{API}/runs/{ok.json()['id']}")
    assert run.status_code == 200


async def test_syntax_errors_are_answered_as_before(client: httpx.AsyncClient) -> None:
    broken = await client.post(f"{API}/workflows", content=b'{"name": ', headers=JSON)
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["code"] == "json_invalid"
    not_utf8 = await client.post(f"{API}/workflows", content=b'{"name": "\xff"}', headers=JSON)
    assert not_utf8.status_code == 400


async def test_a_valid_surrogate_pair_is_text(client: httpx.AsyncClient) -> None:
    await _create(client)
    body = b'{"input": {"x": "\\ud83d\\ude00"}}'
    started = await client.post(f"{API}/workflows/hello/runs", content=body, headers=JSON)
    assert started.status_code == 202, started.text
    assert started.json()["input"] == {"x": "\U0001f600"}


@pytest.mark.parametrize(
    "path",
    [
        "/runs/run_%00",
        "/workflows/a%00b",
        "/workflows/a%00b/versions",
        "/runs?workflow=a%00",
        "/runs?cursor=%00",
    ],
)
async def test_nul_in_a_path_or_query_parameter(client: httpx.AsyncClient, path: str) -> None:
    """PostgreSQL cannot take U+0000 in text: refused (422), not a failed query (500)."""
    response = await client.get(API + path)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "nul_character"


@pytest.mark.parametrize("field", ["username", "password"])
async def test_nul_in_a_login_form_field(client: httpx.AsyncClient, field: str) -> None:
    """The login form is not JSON, but its fields reach the database (the user lookup and
    the throttle's key): U+0000 is refused (422), not a failed query (500)."""
    form = {"username": "admin", "password": "whatever-it-is", field: "ad\x00min"}
    response = await client.post(f"{API}/auth/token", data=form)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "nul_character"


async def test_the_service_checks_run_payloads(container: Container) -> None:
    """Callers other than the API (the CLI, samples, plugins) get the same refusal."""
    record, _, _ = await container.service.save_workflow(HELLO)
    with pytest.raises(InvalidInput) as caught:
        await container.service.start_run(record.id, {"x": [math.nan]}, vars={"v": "\ud800"})
    found = [(p.pointer, p.code) for p in caught.value.problems]
    assert found == [("/input/x/0", "non_finite_number"), ("/vars/v", "lone_surrogate")]
    assert await container.store.list_runs(limit=10) == []


# -- authentication comes first ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"input": {"x": "\\ud800"}}', b'{"input": ', b'{"input": ' + nested(900).encode() + b"}"],
    ids=["refused", "syntax-error", "deep"],
)
async def test_an_anonymous_body_is_not_parsed(container: Container, body: bytes) -> None:
    """The caller is authenticated before the body is parsed: an anonymous client gets 401
    whatever it sends, and cannot make the API parse a body (up to the size limit) per
    request."""
    await container.service.save_workflow(HELLO)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(container)), base_url="http://test"
    ) as anonymous:
        response = await anonymous.post(f"{API}/workflows/hello/runs", content=body, headers=JSON)
        forbidden = await anonymous.post(
            f"{API}/users", content=body, headers={**JSON, "X-API-Key": "not-a-key"}
        )
    assert response.status_code == 401, response.text
    assert forbidden.status_code == 401, forbidden.text


async def test_a_body_without_the_role_is_not_parsed(container: Container) -> None:
    """Authenticated but not allowed (a viewer starting a run): 403, not 422."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(container)),
        base_url="http://test",
        headers=await auth_headers(container, "viewer", Role.VIEWER),
    ) as viewer:
        response = await viewer.post(
            f"{API}/workflows/hello/runs", content=b'{"input": "\\ud800"}', headers=JSON
        )
    assert response.status_code == 403, response.text


async def test_large_bodies_are_parsed_off_the_event_loop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body above 64 KiB is parsed in a thread (a multi-megabyte parse would hold every
    other request of the process); a small one on the loop (a thread costs more)."""
    loop_thread = threading.get_ident()
    threads: list[bool] = []
    strict_loads = jsonvalue.loads

    def recording_loads(data: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident() != loop_thread)
        return strict_loads(data, **kwargs)

    monkeypatch.setattr(jsonvalue, "loads", recording_loads)
    await _create(client)
    big = {"input": {"text": "x" * (65 * 1024)}}
    started = await client.post(f"{API}/workflows/hello/runs", json=big)
    assert started.status_code == 202, started.text
    assert threads == [False, True]  # the definition on the loop, the big body in a thread
    refused = await client.post(
        f"{API}/workflows/hello/runs",
        content=json.dumps({**big, "vars": {"v": "\ud800"}}).encode(),
        headers=JSON,
    )
    assert_refused(refused, "lone_surrogate", "/vars/v")
