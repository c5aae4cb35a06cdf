"""Authentication and authorization of requests, and the audit of state-changing ones.

:data:`RULES` is the one table of who may call what: every route of the API has a rule
(method, path template) -> required role (None: public). A route without a rule is refused
(403) and a test walks the OpenAPI document to prove every route has one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowyard.api.metrics import metrics_without_token, route_template
from flowyard.api.ratelimit import Network, client_ip
from flowyard.domain.auth import AuditEntry, Role
from flowyard.security import AuthError, Principal

API = "/api/v1"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_log = logging.getLogger("flowyard.api")


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call a route, and how its calls are named in the audit log."""

    role: Role | None
    action: str
    target: str | None = None
    #: ``role`` is required unless ``Settings.metrics_access`` lets this client in without.
    metrics: bool = False
    #: ``role`` is required unless the request carries this query parameter (a hook's URL
    #: answers Meta's unauthenticated ``hub.mode`` check; the route checks its token).
    public_with: str | None = None


_V, _O, _E, _A = Role.VIEWER, Role.OPERATOR, Role.EDITOR, Role.ADMIN

#: (method, path template) -> rule. The single source of truth for RBAC.
RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(None, "health"),
    ("GET", "/readyz"): Rule(None, "ready"),
    ("GET", f"{API}/healthz"): Rule(None, "health"),
    ("GET", f"{API}/readyz"): Rule(None, "ready"),
    ("GET", "/metrics"): Rule(_V, "metrics", metrics=True),
    ("GET", f"{API}/node-types"): Rule(_V, "node_types.list"),
    ("GET", f"{API}/plugins"): Rule(_V, "plugins.list"),
    ("POST", f"{API}/auth/token"): Rule(None, "auth.token"),
    ("POST", f"{API}/auth/refresh"): Rule(None, "auth.refresh"),
    ("POST", f"{API}/auth/logout"): Rule(_V, "auth.logout"),
    ("POST", f"{API}/auth/password"): Rule(_V, "auth.password", "user"),
    ("POST", f"{API}/workflows/validate"): Rule(_V, "workflow.validate"),
    ("POST", f"{API}/workflows"): Rule(_E, "workflow.create", "workflow"),
    ("GET", f"{API}/workflows"): Rule(_V, "workflow.list"),
    ("GET", f"{API}/workflows/{{workflow_ref}}"): Rule(_V, "workflow.get"),
    ("PUT", f"{API}/workflows/{{workflow_ref}}"): Rule(_E, "workflow.update", "workflow"),
    ("DELETE", f"{API}/workflows/{{workflow_ref}}"): Rule(_E, "workflow.archive", "workflow"),
    ("GET", f"{API}/workflows/{{workflow_ref}}/versions"): Rule(_V, "workflow.versions"),
    ("GET", f"{API}/workflows/{{workflow_ref}}/versions/{{version}}"): Rule(_V, "workflow.version"),
    ("GET", f"{API}/workflows/{{workflow_ref}}/versions/{{version}}/diff/{{other}}"): Rule(
        _V, "workflow.diff"
    ),
    ("GET", f"{API}/workflows/{{workflow_ref}}/graph"): Rule(_V, "workflow.graph"),
    ("POST", f"{API}/workflows/{{workflow_ref}}/draft"): Rule(_E, "draft.open", "workflow"),
    ("GET", f"{API}/workflows/{{workflow_ref}}/draft"): Rule(_V, "draft.get"),
    ("DELETE", f"{API}/workflows/{{workflow_ref}}/draft"): Rule(_E, "draft.discard", "workflow"),
    ("PATCH", f"{API}/workflows/{{workflow_ref}}/draft"): Rule(_E, "draft.patch", "workflow"),
    ("POST", f"{API}/workflows/{{workflow_ref}}/draft/nodes"): Rule(
        _E, "draft.node_add", "workflow"
    ),
    ("PATCH", f"{API}/workflows/{{workflow_ref}}/draft/nodes/{{node_id}}"): Rule(
        _E, "draft.node_update", "workflow"
    ),
    ("PUT", f"{API}/workflows/{{workflow_ref}}/draft/nodes/{{node_id}}"): Rule(
        _E, "draft.node_replace", "workflow"
    ),
    ("DELETE", f"{API}/workflows/{{workflow_ref}}/draft/nodes/{{node_id}}"): Rule(
        _E, "draft.node_delete", "workflow"
    ),
    ("POST", f"{API}/workflows/{{workflow_ref}}/draft/nodes/{{node_id}}/rename"): Rule(
        _E, "draft.node_rename", "workflow"
    ),
    ("POST", f"{API}/workflows/{{workflow_ref}}/draft/edges"): Rule(
        _E, "draft.connect", "workflow"
    ),
    ("DELETE", f"{API}/workflows/{{workflow_ref}}/draft/edges"): Rule(
        _E, "draft.disconnect", "workflow"
    ),
    ("POST", f"{API}/workflows/{{workflow_ref}}/draft/undo"): Rule(_E, "draft.undo", "workflow"),
    ("POST", f"{API}/workflows/{{workflow_ref}}/draft/redo"): Rule(_E, "draft.redo", "workflow"),
    ("GET", f"{API}/workflows/{{workflow_ref}}/draft/history"): Rule(_V, "draft.history"),
    ("POST", f"{API}/workflows/{{workflow_ref}}/draft/publish"): Rule(
        _E, "draft.publish", "workflow"
    ),
    ("POST", f"{API}/workflows/{{workflow_ref}}/runs"): Rule(_O, "run.start", "workflow"),
    ("GET", f"{API}/runs"): Rule(_V, "run.list"),
    ("GET", f"{API}/runs/{{run_id}}"): Rule(_V, "run.get"),
    ("GET", f"{API}/runs/{{run_id}}/steps"): Rule(_V, "run.steps"),
    ("GET", f"{API}/runs/{{run_id}}/events"): Rule(_V, "run.events"),
    ("POST", f"{API}/runs/retry"): Rule(_O, "run.retry_bulk", "run"),
    ("POST", f"{API}/runs/{{run_id}}/cancel"): Rule(_O, "run.cancel", "run"),
    ("POST", f"{API}/runs/{{run_id}}/pause"): Rule(_O, "run.pause", "run"),
    ("POST", f"{API}/runs/{{run_id}}/resume"): Rule(_O, "run.resume", "run"),
    ("POST", f"{API}/runs/{{run_id}}/retry"): Rule(_O, "run.retry", "run"),
    ("POST", f"{API}/runs/{{run_id}}/signals/{{name}}"): Rule(_O, "run.signal", "run"),
    ("GET", f"{API}/runs/{{run_id}}/signals"): Rule(_V, "run.signals"),
    ("GET", f"{API}/runs/{{run_id}}/actions"): Rule(_V, "run.actions"),
    ("POST", f"{API}/runs/{{run_id}}/actions/{{action}}"): Rule(_O, "run.action", "run"),
    ("POST", f"{API}/workflows/{{workflow_ref}}/correlations/{{key}}/signals/{{name}}"): Rule(
        _O, "run.signal", "workflow"
    ),
    ("POST", f"{API}/workflows/{{workflow_ref}}/correlations/{{key}}/actions/{{action}}"): Rule(
        _O, "run.action", "workflow"
    ),
    ("POST", f"{API}/users"): Rule(_A, "user.create", "user"),
    ("GET", f"{API}/users"): Rule(_A, "user.list"),
    ("PATCH", f"{API}/users/{{user_id}}"): Rule(_A, "user.update", "user"),
    ("DELETE", f"{API}/users/{{user_id}}"): Rule(_A, "user.delete", "user"),
    ("POST", f"{API}/api-keys"): Rule(_A, "api_key.create", "api_key"),
    ("GET", f"{API}/api-keys"): Rule(_A, "api_key.list"),
    ("DELETE", f"{API}/api-keys/{{key_id}}"): Rule(_A, "api_key.revoke", "api_key"),
    ("GET", f"{API}/audit"): Rule(_A, "audit.list"),
    ("POST", f"{API}/campaigns"): Rule(_O, "campaign.start", "campaign"),
    ("GET", f"{API}/campaigns"): Rule(_V, "campaign.list"),
    ("GET", f"{API}/campaigns/{{campaign_id}}"): Rule(_V, "campaign.get"),
    ("PATCH", f"{API}/campaigns/{{campaign_id}}"): Rule(_O, "campaign.update", "campaign"),
    ("GET", f"{API}/campaigns/{{campaign_id}}/runs"): Rule(_V, "campaign.runs"),
    ("POST", f"{API}/campaigns/{{campaign_id}}/pause"): Rule(_O, "campaign.pause", "campaign"),
    ("POST", f"{API}/campaigns/{{campaign_id}}/resume"): Rule(_O, "campaign.resume", "campaign"),
    ("POST", f"{API}/campaigns/{{campaign_id}}/cancel"): Rule(_O, "campaign.cancel", "campaign"),
    ("POST", f"{API}/campaigns/{{campaign_id}}/retry-failed"): Rule(
        _O, "campaign.retry_failed", "campaign"
    ),
    # WebSockets (not in OpenAPI): checked by the stream router when the token arrives.
    ("WS", f"{API}/runs/{{run_id}}/stream"): Rule(_V, "stream.run"),
    ("WS", f"{API}/stream"): Rule(_V, "stream.all"),
    ("GET", f"{API}/credential-types"): Rule(_E, "credential.types"),
    ("POST", f"{API}/credentials"): Rule(_A, "credential.create", "credential"),
    ("GET", f"{API}/credentials"): Rule(_E, "credential.list"),
    ("GET", f"{API}/credentials/{{name}}"): Rule(_E, "credential.get"),
    ("PUT", f"{API}/credentials/{{name}}"): Rule(_A, "credential.update", "credential"),
    ("DELETE", f"{API}/credentials/{{name}}"): Rule(_A, "credential.delete", "credential"),
    ("GET", f"{API}/quotas"): Rule(_E, "quota.list"),
    ("GET", f"{API}/quotas/{{key}}"): Rule(_E, "quota.get"),
    ("PUT", f"{API}/quotas/{{key}}"): Rule(_A, "quota.put", "quota"),
    ("DELETE", f"{API}/quotas/{{key}}"): Rule(_A, "quota.delete", "quota"),
    ("GET", f"{API}/credentials/{{name}}/quota"): Rule(_E, "quota.get"),
    ("PUT", f"{API}/credentials/{{name}}/quota"): Rule(_A, "quota.put", "quota"),
    ("DELETE", f"{API}/credentials/{{name}}/quota"): Rule(_A, "quota.delete", "quota"),
    ("POST", f"{API}/hooks"): Rule(_E, "hook.create", "hook"),
    ("GET", f"{API}/hooks"): Rule(_E, "hook.list"),
    ("GET", f"{API}/hooks/{{hook_ref}}"): Rule(_E, "hook.get", public_with="hub.mode"),
    ("PATCH", f"{API}/hooks/{{hook_ref}}"): Rule(_E, "hook.update", "hook"),
    ("DELETE", f"{API}/hooks/{{hook_ref}}"): Rule(_E, "hook.delete", "hook"),
    # The public URLs of hooks: each delivery is checked by its hook's own scheme.
    ("POST", f"{API}/hooks/{{hook_id}}"): Rule(None, "hook.deliver", "hook"),
    ("POST", f"{API}/hooks/by-path/{{path}}"): Rule(None, "hook.deliver", "hook"),
    ("GET", f"{API}/hooks/by-path/{{path}}"): Rule(None, "hook.verify"),
    ("POST", f"{API}/event-triggers"): Rule(_E, "event_trigger.create", "event_trigger"),
    ("GET", f"{API}/event-triggers"): Rule(_E, "event_trigger.list"),
    ("GET", f"{API}/event-triggers/{{trigger_ref}}"): Rule(_E, "event_trigger.get"),
    ("PATCH", f"{API}/event-triggers/{{trigger_ref}}"): Rule(
        _E, "event_trigger.update", "event_trigger"
    ),
    ("DELETE", f"{API}/event-triggers/{{trigger_ref}}"): Rule(
        _E, "event_trigger.delete", "event_trigger"
    ),
    # Starts runs of every subscribed workflow, so it takes the role that wires them.
    ("POST", f"{API}/events/{{name}}"): Rule(_E, "event.post", "event"),
    ("POST", f"{API}/schedules"): Rule(_E, "schedule.create", "schedule"),
    ("GET", f"{API}/schedules"): Rule(_V, "schedule.list"),
    ("GET", f"{API}/schedules/{{schedule_ref}}"): Rule(_V, "schedule.get"),
    ("PATCH", f"{API}/schedules/{{schedule_ref}}"): Rule(_E, "schedule.update", "schedule"),
    ("DELETE", f"{API}/schedules/{{schedule_ref}}"): Rule(_E, "schedule.delete", "schedule"),
    ("POST", f"{API}/schedules/{{schedule_ref}}/pause"): Rule(_O, "schedule.pause", "schedule"),
    ("POST", f"{API}/schedules/{{schedule_ref}}/resume"): Rule(_O, "schedule.resume", "schedule"),
    ("POST", f"{API}/schedules/{{schedule_ref}}/trigger"): Rule(_O, "schedule.trigger", "schedule"),
    ("GET", f"{API}/schedules/{{schedule_ref}}/fires"): Rule(_V, "schedule.fires"),
}


def unauthorized(detail: str) -> HTTPException:
    """401 with ``WWW-Authenticate: Bearer``."""
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def token_of(conn: HTTPConnection) -> str | None:
    """The bearer token or ``X-API-Key`` of a request."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.headers.get("x-api-key") or None


def _note_rule(entry: AuditEntry | None, rule: Rule, conn: HTTPConnection) -> None:
    if entry is None:
        return
    entry.action = rule.action
    if rule.target is not None:
        entry.target_type = rule.target
        params = list(conn.path_params.values())
        entry.target_id = str(params[0]) if params else None


#: Where :class:`AuditMiddleware` leaves the request's audit entry in its scope.
_AUDIT = "flowyard.audit"


def audit_of(conn: HTTPConnection) -> AuditEntry | None:
    """The audit entry of a state-changing request that is not written yet (None for a read,
    or once it is written). Routes pass it to the use case that makes the change, whose
    transaction writes it (``audit=``)."""
    entry: AuditEntry | None = conn.scope.get(_AUDIT)
    return entry if entry is not None and not entry.written else None


async def audit_dependency(conn: HTTPConnection) -> AuditEntry | None:
    """:func:`audit_of` as a dependency (async: no thread hop)."""
    return audit_of(conn)


#: Where :func:`authorize` leaves its answer in the request's scope: the JSON body route
#: calls it before parsing the body, FastAPI again as the app's dependency.
_AUTHORIZED = "flowyard.authorized"


async def authorize(conn: HTTPConnection) -> Principal | None:
    """Authenticate the request and check the route's rule (401 / 403), once per request.
    Websockets authenticate through the stream authenticator instead."""
    if conn.scope["type"] != "http":
        return None
    if _AUTHORIZED in conn.scope:
        done: Principal | None = conn.scope[_AUTHORIZED]
        return done
    principal = await _authorize(conn)
    conn.scope[_AUTHORIZED] = principal
    return principal


async def _authorize(conn: HTTPConnection) -> Principal | None:
    rule = RULES.get((conn.scope["method"], route_template(conn.scope)))
    entry = audit_of(conn)
    if rule is None:
        raise HTTPException(403, "no access rule for this route")
    _note_rule(entry, rule, conn)
    container = conn.app.state.container
    if (
        rule.role is None
        or (rule.public_with is not None and rule.public_with in conn.query_params)
        or (
            rule.metrics
            and metrics_without_token(conn.scope, container.settings, conn.app.state.rate_limits)
        )
    ):
        return None
    try:
        principal: Principal = await container.auth.authenticate(token_of(conn))
    except AuthError as exc:
        raise unauthorized(str(exc)) from None
    if entry is not None:
        entry.actor = principal.actor
    if not principal.role.allows(rule.role):
        raise HTTPException(403, f"role {principal.role.value} may not do this")
    conn.state.principal = principal
    return principal


async def get_principal(
    principal: Annotated[Principal | None, Depends(authorize)],
) -> Principal:
    """The authenticated principal of a protected route."""
    if principal is None:  # a public route asked for it
        raise unauthorized("authentication required")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _outcome(status: int) -> str:
    if status < 400:
        return "success"
    return {
        401: "unauthenticated",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        412: "conflict",
        429: "throttled",
    }.get(status, "invalid" if status in (400, 413, 422) else "error")


class AuditMiddleware:
    """Gives every state-changing request an audit entry (in its scope: :func:`audit_of`).
    The route hands it to the use case, and the store writes it with the change; an entry
    left unwritten (a refused or failed request, or one that changed nothing through the
    store) is written here, in its own transaction, once the response status is known.
    ``source_ip`` is the client address exactly as the rate limits see it
    (:func:`~flowyard.api.ratelimit.client_ip` with ``trusted_proxies``)."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with its audit entry."""
        if scope["type"] != "http" or scope["method"] not in STATE_CHANGING:
            await self.app(scope, receive, send)
            return
        entry = AuditEntry(
            action=f"{scope['method']} {scope['path']}",
            source_ip=client_ip(scope, self.trusted_proxies) if scope.get("client") else None,
        )
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        scope[_AUDIT] = entry
        try:
            await self.app(scope, receive, send_status)
        finally:
            if not entry.written:
                await _write_late(scope, entry, status)


async def _write_late(scope: Scope, entry: AuditEntry, status: int) -> None:
    entry.outcome = _outcome(status)
    entry.detail = {**(entry.detail or {}), "status": status}
    container: Any = getattr(scope["app"].state, "container", None)
    if container is None:
        return
    try:
        await container.admin.append_audit(entry)
    except Exception:
        _log.exception("audit entry not written: %s by %s", entry.action, entry.actor)
