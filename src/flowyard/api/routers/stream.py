"""``WS /runs/{id}/stream`` and ``WS /stream``: run events pushed as they are committed.

See :mod:`flowyard.api.stream` for delivery guarantees, backpressure and access. Who may
stream is in :data:`flowyard.api.security.RULES` under ``("WS", path)``, like every route.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket

from flowyard.api import stream
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.metrics import route_template
from flowyard.api.schemas import MAX_ID
from flowyard.api.security import RULES
from flowyard.bootstrap import Container
from flowyard.domain.errors import NotFound
from flowyard.domain.ids import RunId, WorkflowId
from flowyard.domain.statuses import RunStatus

router = APIRouter(tags=["runs"], route_class=StrictJSONRoute)

#: ``tail``: how often (and how long apart) the event horizon is asked for before giving up.
TAIL_TRIES = 20
TAIL_PAUSE_S = 0.05

AfterQuery = Annotated[int, Query(ge=0, le=MAX_ID, description="Resume after this event id")]


async def _accept(ws: WebSocket, container: Container) -> stream.Guard | None:
    """Accept, take the token (subprotocol ``bearer.<token>`` or a first message
    ``{"token": ...}`` within ``stream_auth_timeout_s``), authenticate and check the route's
    rule. The guard that re-checks access later; None if refused (the websocket is then
    closed: 4401 unauthenticated, 1008 access refused) or the client left."""
    token, subprotocol = stream.token_from_subprotocols(list(ws.scope.get("subprotocols", [])))
    await ws.accept(subprotocol=subprotocol)
    if token is None:
        try:
            async with asyncio.timeout(container.settings.stream_auth_timeout_s):
                message = await ws.receive()
        except TimeoutError:
            message = {}
        if message.get("type") == "websocket.disconnect":
            return None
        # Any other first message, text or binary, well-formed or not: a token or None.
        token = stream.token_from_message(message)
    authenticate: stream.Authenticator = getattr(
        ws.app.state, "stream_authenticator", None
    ) or stream.authenticator_for(container.auth)
    rule = RULES.get(("WS", route_template(ws.scope)))

    async def refusal() -> stream.StreamAuthError | None:
        if rule is None:  # fail closed, like an HTTP route without a rule
            return stream.StreamAuthError("no access rule", stream.CLOSE_POLICY_VIOLATION)
        try:
            stream.require_role(await authenticate(token), rule.role)
        except stream.StreamAuthError as exc:
            return exc
        return None

    async def guard() -> int | None:
        refused = await refusal()
        return None if refused is None else refused.code

    refused = await refusal()
    if refused is not None:
        # A close reason is at most 123 bytes.
        await ws.close(refused.code, refused.reason.encode()[:123].decode(errors="ignore"))
        return None
    return guard


async def _horizon_now(container: Container) -> int | None:
    """The current event horizon, waiting out a short event-writing transaction (None when
    it stays unknown: the client is told to come back)."""
    for _ in range(TAIL_TRIES):
        horizon = await container.events.event_horizon()
        if horizon is not None:
            return horizon
        await asyncio.sleep(TAIL_PAUSE_S)
    return None


async def _serve(
    ws: WebSocket, filter_: stream.StreamFilter, after: int, *, tail: bool = False
) -> None:
    container: Container = ws.app.state.container
    guard = await _accept(ws, container)
    if guard is None:
        return
    if tail:
        horizon = await _horizon_now(container)
        if horizon is None:
            await ws.close(stream.CLOSE_TRY_AGAIN_LATER, "event horizon unknown, try again")
            return
        after = max(after, horizon)
    if filter_.run_id is not None:
        try:
            await container.service.get_run_record(filter_.run_id)
        except NotFound:
            await ws.close(stream.CLOSE_UNKNOWN_RUN, "run not found")
            return
    settings = container.settings
    container.service.changes.enable()
    session = stream.StreamSession(
        ws,
        stream.hub_of(ws.app, container),
        filter_,
        after=after,
        queue_size=settings.stream_queue_size,
        slow_client_s=settings.stream_slow_client_s,
        guard=guard,
        guard_interval_s=settings.stream_reauth_interval_s,
        changes=container.service.changes,
    )
    await session.run()


@router.websocket("/runs/{run_id}/stream")
async def run_stream(ws: WebSocket, run_id: str, after: AfterQuery = 0) -> None:
    """Events of one run in id order, after ``after``; closes 1000 once the run is terminal
    and its events are sent, 4404 for an unknown run, 1013 for a client that fell behind."""
    await _serve(ws, stream.StreamFilter(run_id=RunId(run_id)), after)


@router.websocket("/stream")
async def all_stream(
    ws: WebSocket,
    after: AfterQuery = 0,
    workflow_id: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[RunStatus | None, Query()] = None,
    kind: Annotated[stream.StreamKind | None, Query()] = None,
    tail: Annotated[
        bool,
        Query(description="Start at the newest committed event: only what happens from now"),
    ] = False,
) -> None:
    """Events of every run (of ``workflow_id``; of runs currently in ``status``), in id
    order after ``after`` (with ``tail``: after the newest event committed when the stream
    opens, so a page that has just read the runs sees only their changes), and the drafts'
    changes (of ``workflow_id``; none with ``status``) as they happen; ``kind`` keeps only
    ``runs`` or ``drafts``. Never ends by
    itself."""
    filter_ = stream.StreamFilter(
        workflow_id=WorkflowId(workflow_id) if workflow_id else None, status=status, kind=kind
    )
    await _serve(ws, filter_, after, tail=tail)
