"""The OpenAPI document documents every operation, including routers added later: a summary
and a description, an example for every request body and every JSON success response, and
the problem responses (application/problem+json, one shared schema) it can answer.

Each test collects every gap before failing, so one run lists all that is missing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowyard.api import create_app
from flowyard.api.security import RULES
from flowyard.settings import Settings

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/ProblemDetails"
METHODS = ("get", "put", "post", "delete", "patch")
#: Operations with a path parameter that cannot be unknown.
NO_404: set[tuple[str, str]] = {
    ("PUT", "/api/v1/quotas/{key}"),  # creates the quota when there is none
}
#: Lists answered as a bare array, not a page: the fixed registry of credential types.
UNPAGED = {
    ("GET", "/api/v1/credential-types"),
}


@pytest.fixture
async def spec(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """``/openapi.json`` of an app on a throwaway database (the document needs none)."""
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'docs.db'}", workers=0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    yield response.json()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path template, operation) of every documented operation."""
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref``."""
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


def has_example(spec: dict[str, Any], media: dict[str, Any]) -> bool:
    """The media type, or its schema (through ``$ref``, ``anyOf``/``oneOf``/``allOf`` and
    array ``items``), carries an example."""
    if media.get("example") is not None or media.get("examples"):
        return True
    return schema_has_example(spec, media.get("schema", {}))


def schema_has_example(spec: dict[str, Any], schema: dict[str, Any]) -> bool:
    schema = resolve(spec, schema)
    if schema.get("example") is not None or schema.get("examples"):
        return True
    for key in ("anyOf", "oneOf", "allOf"):
        branches = [b for b in schema.get(key, []) if resolve(spec, b).get("type") != "null"]
        if branches and any(schema_has_example(spec, b) for b in branches):
            return True
    if schema.get("type") == "array" and "items" in schema:
        return schema_has_example(spec, schema["items"])
    return False


def report(gaps: list[str]) -> str:
    return f"{len(gaps)} gap(s) in /openapi.json:\n  " + "\n  ".join(gaps)


def test_every_operation_has_a_summary_and_a_description(spec: dict[str, Any]) -> None:
    gaps = [
        f"{method} {path}: no {what}"
        for method, path, op in operations(spec)
        for what in ("summary", "description")
        if not str(op.get(what, "")).strip()
    ]
    assert not gaps, report(gaps)


def test_every_request_body_has_an_example(spec: dict[str, Any]) -> None:
    gaps = []
    bodies = 0
    for method, path, op in operations(spec):
        for media_type, media in op.get("requestBody", {}).get("content", {}).items():
            bodies += 1
            if not has_example(spec, media):
                gaps.append(f"{method} {path}: request body {media_type} has no example")
    assert bodies > 10
    assert not gaps, report(gaps)


def test_every_json_success_response_has_an_example(spec: dict[str, Any]) -> None:
    gaps = []
    checked = 0
    for method, path, op in operations(spec):
        for status, response in op["responses"].items():
            if not status.startswith("2"):
                continue
            for media_type, media in response.get("content", {}).items():
                if "json" not in media_type:
                    continue
                checked += 1
                if not has_example(spec, media):
                    gaps.append(f"{method} {path}: {status} {media_type} has no example")
    assert checked > 25
    assert not gaps, report(gaps)


def expected_problems(method: str, path: str, op: dict[str, Any]) -> set[str]:
    """The problem statuses an operation must declare, from its shape and its rule."""
    expected = set()
    rule = RULES.get((method, path))
    if rule is not None and rule.role is not None:
        expected |= {"401", "403"}
    if re.search(r"\{[^}]+\}", path) and (method, path) not in NO_404:
        expected.add("404")
    if "requestBody" in op or op.get("parameters"):
        expected.add("422")
    if "requestBody" in op:
        expected.add("413")
    if path == "/api/v1/workflows/{workflow_ref}" and method in ("PUT", "DELETE"):
        expected.add("412")
    return expected


def test_problem_responses_are_declared(spec: dict[str, Any]) -> None:
    gaps = []
    for method, path, op in operations(spec):
        responses = op["responses"]
        missing = expected_problems(method, path, op) - set(responses)
        if missing:
            gaps.append(f"{method} {path}: undeclared problem responses {sorted(missing)}")
        for status, response in responses.items():
            if int(status) < 400:
                continue
            content = response.get("content", {})
            media = content.get(PROBLEM_JSON)
            if set(content) != {PROBLEM_JSON} or media is None:
                gaps.append(f"{method} {path}: {status} is not only {PROBLEM_JSON}")
                continue
            if media.get("schema") != {"$ref": PROBLEM_REF}:
                gaps.append(f"{method} {path}: {status} does not use {PROBLEM_REF}")
            example = media.get("example")
            if not example or example.get("status") != int(status):
                gaps.append(f"{method} {path}: {status} has no problem example of its status")
            if not response.get("description"):
                gaps.append(f"{method} {path}: {status} has no description")
    assert not gaps, report(gaps)


def test_problem_schema_is_declared_once(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    problem = schemas["ProblemDetails"]
    assert {"type", "title", "status", "detail"} <= set(problem["properties"])
    assert problem["examples"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas


def test_protected_operations_declare_their_security(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"]["name"] == "X-API-Key"
    for method, path, op in operations(spec):
        rule = RULES.get((method, path))
        if rule is None or rule.role is None:
            assert "security" not in op, (method, path)
        else:
            assert {"bearer": []} in op["security"], (method, path)
            assert rule.role.value in op["responses"]["403"]["description"], (method, path)


def test_conditional_requests_are_documented(spec: dict[str, Any]) -> None:
    item = spec["paths"]["/api/v1/workflows/{workflow_ref}"]
    for method, header in (("put", "if-match"), ("delete", "if-match"), ("get", "if-none-match")):
        names = [p["name"] for p in item[method]["parameters"] if p["in"] == "header"]
        assert header in names, (method, names)
    assert "ETag" in item["get"]["responses"]["200"]["headers"]
    assert "304" in item["get"]["responses"]
    assert item["put"]["responses"]["412"]["content"][PROBLEM_JSON]["example"]["current_etag"]


def test_every_list_is_paged(spec: dict[str, Any]) -> None:
    gaps = []
    for method, path, op in operations(spec):
        schema = op["responses"].get("200", {}).get("content", {}).get("application/json", {})
        ref = schema.get("schema", {}).get("$ref", "")
        if method != "GET" or not ref.split("/")[-1].startswith("Page_"):
            continue
        names = {p["name"] for p in op.get("parameters", [])}
        if not {"limit", "cursor"} <= names:
            gaps.append(f"{method} {path}: a page without limit and cursor ({sorted(names)})")
    assert not gaps, report(gaps)
    lists = [
        (m, p)
        for m, p, op in operations(spec)
        if op["responses"]
        .get("200", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
        .get("type")
        == "array"
    ]
    assert set(lists) <= UNPAGED, sorted(set(lists) - UNPAGED)
