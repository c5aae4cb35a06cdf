"""Every route of the OpenAPI document needs a token and has one rule in the RBAC table."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flowyard.api.security import RULES
from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.auth import auth_headers

PROBLEM_JSON = "application/problem+json"
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/refresh"),
    # Webhook triggers' public URLs: each hook's own scheme authenticates (tests/triggers).
    ("POST", "/api/v1/hooks/{hook_id}"),
    ("POST", "/api/v1/hooks/by-path/{path}"),
    ("GET", "/api/v1/hooks/by-path/{path}"),
}


async def operations(anon: httpx.AsyncClient) -> list[tuple[str, str, str]]:
    """(method, template, concrete path) of every operation of /openapi.json."""
    spec: dict[str, Any] = (await anon.get("/openapi.json")).json()
    found = []
    for template, item in spec["paths"].items():
        concrete = template
        for param in ("workflow_ref", "run_id", "user_id", "key_id"):
            concrete = concrete.replace("{" + param + "}", "nosuch")
        concrete = concrete.replace("{version}", "1")
        found.extend(
            (m.upper(), template, concrete)
            for m in item
            if m in ("get", "post", "put", "patch", "delete")
        )
    assert len(found) > 25
    return found


async def call(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return await client.request(method, path, json=body, **kw)


async def test_every_route_has_a_rule(anon: httpx.AsyncClient) -> None:
    missing = [(m, t) for m, t, _ in await operations(anon) if (m, t) not in RULES]
    assert not missing, f"routes without an RBAC rule: {missing}"


async def test_no_token_is_401_everywhere_but_public_routes(anon: httpx.AsyncClient) -> None:
    for method, template, path in await operations(anon):
        response = await call(anon, method, path)
        if (method, template) in PUBLIC:
            assert response.status_code != 401, (method, template)
            continue
        assert response.status_code == 401, (method, template, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["type"].endswith("/unauthorized")


@pytest.mark.parametrize("role", list(Role))
async def test_role_matrix(anon: httpx.AsyncClient, container: Container, role: Role) -> None:
    headers = await auth_headers(container, f"u-{role.value}", role)
    for method, template, path in await operations(anon):
        rule = RULES[(method, template)]
        response = await call(anon, method, path, headers=headers)
        allowed = rule.role is None or rule.metrics or role.allows(rule.role)
        if allowed:
            assert response.status_code != 403, (role, method, template, response.text)
        else:
            assert response.status_code == 403, (role, method, template, response.status_code)
            assert response.headers["content-type"].startswith(PROBLEM_JSON)
            assert response.json()["type"].endswith("/forbidden")


async def test_roles_as_documented(anon: httpx.AsyncClient, container: Container) -> None:
    expected = {
        ("POST", "/api/v1/workflows"): Role.EDITOR,
        ("POST", "/api/v1/workflows/{workflow_ref}/runs"): Role.OPERATOR,
        ("POST", "/api/v1/runs/{run_id}/cancel"): Role.OPERATOR,
        ("GET", "/api/v1/runs"): Role.VIEWER,
        ("POST", "/api/v1/users"): Role.ADMIN,
        ("POST", "/api/v1/api-keys"): Role.ADMIN,
        ("GET", "/api/v1/audit"): Role.ADMIN,
    }
    for key, role in expected.items():
        assert RULES[key].role is role, key


async def test_metrics_can_require_auth(container: Container) -> None:
    from flowyard.api import create_app

    settings = container.settings.model_copy(update={"metrics_require_auth": True})
    container.settings = settings
    app = create_app(settings, container=container)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        assert (await client.get("/metrics")).status_code == 401
        headers = await auth_headers(container, "watcher", Role.VIEWER)
        assert (await client.get("/metrics", headers=headers)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
