"""Signals and state-machine actions addressed by workflow and correlation key: a reply that
knows the customer (a phone number, an order id), not the run id (decision 0024)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, status

from flowyard.api.deps import ActorDep, AuditDep, ServiceDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.routers.signals import (
    ActionRequest,
    RunActions,
    SignalName,
    SignalPayload,
    SignalPublic,
    actions_of,
    require_json,
)
from flowyard.domain.definition import MAX_CORRELATION_KEY
from flowyard.domain.state_machine import ACTION_ID_PATTERN

router = APIRouter(tags=["runs"], route_class=StrictJSONRoute)

CorrelationKey = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_CORRELATION_KEY,
        description="The run's correlation key (percent-encode it: '+' and spaces included).",
        examples=["+15551230001"],
    ),
]
_D404 = "No such workflow, or no unfinished run of it holds the key."
_D409 = (
    "Several unfinished runs hold the key (the workflow does not make it unique; `run_ids` "
    "names them), or the run refuses it (ended; for actions: not allowed now)."
)


@router.post(
    "/workflows/{workflow_ref}/correlations/{key}/signals/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SignalPublic,
    summary="Send a signal to the run holding a correlation key",
    responses=documented(
        404,
        409,
        413,
        415,
        422,
        d404=_D404,
        d409=_D409,
        d422="A name the workflow does not declare (when it declares `signals`).",
    ),
)
async def signal_by_correlation(
    request: Request,
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    workflow_ref: str,
    key: CorrelationKey,
    name: SignalName,
    payload: SignalPayload = None,
) -> SignalPublic:
    """Deliver a named signal to the one unfinished run of the workflow whose correlation
    key is ``key``, as ``POST /runs/{run_id}/signals/{name}`` does (the answer names the
    run: ``run_id``)."""
    require_json(request, payload)
    signal, woke = await service.signal_by_correlation(
        workflow_ref, key, name, payload, actor=actor, audit=audit
    )
    return SignalPublic.of(signal, woke)


@router.post(
    "/workflows/{workflow_ref}/correlations/{key}/actions/{action}",
    response_model=RunActions,
    summary="Take an action on the state-machine run holding a correlation key",
    responses=documented(404, 409, 422, d404=_D404, d409=_D409),
)
async def action_by_correlation(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    workflow_ref: str,
    key: CorrelationKey,
    action: Annotated[str, Path(pattern=ACTION_ID_PATTERN, examples=["approve"])],
    body: Annotated[ActionRequest | None, Body()] = None,
) -> RunActions:
    """Move the one unfinished run of the workflow whose correlation key is ``key``, as
    ``POST /runs/{run_id}/actions/{action}`` does (the answer names the run: ``run_id``)."""
    moved = await service.action_by_correlation(
        workflow_ref, key, action, actor=actor, payload=body.payload if body else None, audit=audit
    )
    return actions_of(moved)
