"""The OpenAPI document: what FastAPI generates, completed from the rules table.

- ``ProblemDetails`` is one component schema; every problem response refers to it.
- Every route that needs a role (:data:`flowyard.api.security.RULES`) declares its bearer /
  API-key security and the 401 and 403 problems it can answer; so does a route added later
  (the credentials router, ...), without repeating them route by route.
- FastAPI's default ``422`` (``HTTPValidationError``, ``application/json``) is replaced by
  the problem flowyard really answers; a route with a body also declares ``413``.

``tests/api/test_openapi_docs.py`` walks the result: summaries, descriptions, examples and
problem responses on every operation.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from flowyard.api.problems import problem_response
from flowyard.api.schemas import ProblemDetails
from flowyard.api.security import RULES

METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An access token from `POST /api/v1/auth/token`, or an API key "
        "`fy_...` (also accepted as `X-API-Key`).",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
STREAMS = """

**Streams** (WebSocket, not listed below): `WS /api/v1/runs/{run_id}/stream?after=` and
`WS /api/v1/stream?after=&workflow_id=&status=` send run events as JSON, in id order; the
token goes in the subprotocol `bearer.<token>` (with `flowyard.v1`) or a first message
`{"token": "..."}`. Viewer role or higher; close codes 4401 (not authenticated), 1008
(access refused or withdrawn), 4404 (unknown run), 1013 (too slow, resume with `after`).
"""
_DEFAULT_422 = "#/components/schemas/HTTPValidationError"


def install(app: FastAPI) -> None:
    """Serve the completed document at ``app.openapi_url``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    """Add what FastAPI cannot know (see the module docstring); returns ``spec``."""
    info = spec.setdefault("info", {})
    info["description"] = info.get("description", "") + STREAMS
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ProblemDetails"] = ProblemDetails.model_json_schema()
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method in METHODS:
                _complete_operation(method.upper(), path, operation)
    for name in ("HTTPValidationError", "ValidationError"):  # unused once replaced
        if f'"#/components/schemas/{name}"' not in json.dumps(spec):
            schemas.pop(name, None)
    return spec


def _complete_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, response in list(responses.items()):
        content = response.get("content", {})
        if content.get("application/json", {}).get("schema", {}).get("$ref") == _DEFAULT_422:
            responses[status] = problem_response(422)
    rule = RULES.get((method, path))
    if rule is not None and rule.role is not None:
        needs = f"Needs the `{rule.role.value}` role or higher."
        if rule.metrics:
            operation["security"] = [{}, {"bearer": []}, {"apiKey": []}]
            when = (
                " Only for clients not on loopback (`FLOWYARD_METRICS_ACCESS=loopback`, the"
                " default), for every client (`token`), or never (`public`)."
            )
            responses.setdefault("401", problem_response(401, _describe(401) + when))
            responses.setdefault("403", problem_response(403, needs + when))
        else:
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            responses.setdefault("401", problem_response(401))
            responses.setdefault("403", problem_response(403, needs))
    if "requestBody" in operation:
        responses.setdefault("400", problem_response(400))
        responses.setdefault("413", problem_response(413))
    if "requestBody" in operation or operation.get("parameters"):
        responses.setdefault("422", problem_response(422))
    operation["responses"] = dict(sorted(responses.items()))


def _describe(status: int) -> str:
    description: str = problem_response(status)["description"]
    return description
