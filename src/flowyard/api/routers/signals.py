"""Signals to waiting runs (``wait_for_signal``) and actions on state-machine runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.deps import ActorDep, AuditDep, ServiceDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.schemas import MAX_ID, Page, paged
from flowyard.domain.commands import SIGNAL_NAME_PATTERN
from flowyard.domain.records import SignalRecord
from flowyard.domain.state_machine import ACTION_ID_PATTERN, ACTION_SIGNAL
from flowyard.service import ActionsView

router = APIRouter(tags=["runs"], route_class=StrictJSONRoute)

SignalName = Annotated[str, Path(pattern=SIGNAL_NAME_PATTERN, examples=["reply_received"])]
SignalPayload = Annotated[
    Any,
    Body(
        description="Any JSON value; the waiting step's output carries it as 'payload'.",
        openapi_examples={"reply": {"value": {"text": "Yes, let's talk on Tuesday"}}},
    ),
]


class SignalPublic(BaseModel):
    """A signal delivered to a run."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "run_id": "run_01jd0c3v8w2m4x5y6z7a8b9c0d",
                    "name": "reply_received",
                    "payload": {"text": "Yes, let's talk on Tuesday"},
                    "sent_by": "user:admin",
                    "created_at": "2026-11-23T10:00:00Z",
                    "consumed_at": None,
                    "step_id": None,
                    "woke_step": True,
                }
            ]
        }
    )

    id: int
    run_id: str
    name: str
    payload: Any = None
    sent_by: str | None = None
    created_at: datetime
    consumed_at: datetime | None = None
    step_id: int | None = Field(None, description="The step that took it (once taken).")
    woke_step: bool | None = Field(
        None, description="On delivery: a waiting step was woken (else it is buffered)."
    )

    @classmethod
    def of(cls, signal: SignalRecord, woke: bool | None = None) -> SignalPublic:
        """From the record."""
        return cls(
            id=signal.id,
            run_id=signal.run_id,
            name=signal.name,
            payload=signal.payload,
            sent_by=signal.sent_by,
            created_at=signal.created_at,
            consumed_at=signal.consumed_at,
            step_id=signal.step_id,
            woke_step=woke,
        )


@router.post(
    "/runs/{run_id}/signals/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SignalPublic,
    summary="Send a signal to a run",
    responses=documented(404, 409, 413, 415, 422),
)
async def send_signal(
    request: Request,
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    run_id: str,
    name: SignalName,
    payload: SignalPayload = None,
) -> SignalPublic:
    """Deliver a named signal (e.g. ``reply_received``). A step waiting for it wakes now;
    otherwise it is buffered, not lost, and the next ``wait_for_signal`` for that name takes
    it. A finished run refuses signals (409); a body that is not JSON, 415; a name the
    workflow does not declare (when it declares `signals`), 422."""
    require_json(request, payload)
    signal, woke = await service.send_signal(run_id, name, payload, actor=actor, audit=audit)
    return SignalPublic.of(signal, woke)


def require_json(request: Request, payload: Any) -> None:
    """415 unless the body is JSON (a signal's payload is stored and shown as JSON)."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if isinstance(payload, bytes | bytearray) or not (
        kind == "application/json" or kind.endswith("+json")
    ):
        raise HTTPException(415, f"the payload must be JSON (application/json), not {kind}")


@router.get(
    "/runs/{run_id}/signals",
    response_model=Page[SignalPublic],
    summary="List a run's signals",
    responses=documented(404, 422),
)
async def list_signals(
    service: ServiceDep,
    run_id: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    buffered: Annotated[
        bool | None,
        Query(
            description="true: only signals no step took yet (buffered); false: only taken "
            "ones; omitted: all"
        ),
    ] = None,
) -> Page[SignalPublic]:
    """Signals delivered to the run, oldest first, with the step that took each (actions
    on a state machine are listed by ``GET /runs/{run_id}/actions``);
    ``?buffered=true`` lists those still waiting for a step."""
    rows = await service.list_signals(
        run_id, limit=limit + 1, after=cursor, exclude=ACTION_SIGNAL, buffered=buffered
    )
    items, next_cursor = paged(rows, limit, lambda s: s.id)
    return Page[SignalPublic](items=[SignalPublic.of(s) for s in items], next_cursor=next_cursor)


# -- state machines ------------------------------------------------------------------------


class ActionPublic(BaseModel):
    """An action of the run's current state."""

    id: str
    name: str | None = None
    to_state: str
    reason: str | None = Field(None, description="Why it is refused now (unavailable only).")


class Transition(BaseModel):
    """One move of a state-machine run."""

    model_config = ConfigDict(populate_by_name=True)

    from_state: str = Field(alias="from")
    to: str
    action: str
    by: str
    at: datetime
    payload: Any = Field(None, description="The data the action carried (its request body's).")


class RunActions(BaseModel):
    """Where a state-machine run is, the actions it accepts now, and its history."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "run_id": "run_01jd0c3v8w2m4x5y6z7a8b9c0d",
                    "run_status": "waiting",
                    "state": "pending_review",
                    "status": "waiting",
                    "actions": [{"id": "approve", "name": "Approve", "to_state": "approved"}],
                    "unavailable": [
                        {
                            "id": "escalate",
                            "name": "Escalate to legal",
                            "to_state": "approved",
                            "reason": "action 'escalate' is disabled",
                        }
                    ],
                    "history": [
                        {
                            "from": "draft",
                            "to": "pending_review",
                            "action": "submit",
                            "by": "user:ada",
                            "at": "2026-11-23T10:00:00Z",
                            "payload": {"comment": "Ready for review"},
                        }
                    ],
                }
            ]
        }
    )

    run_id: str
    run_status: str
    state: str | None
    status: Literal["waiting", "moving", "paused", "final", "ended"]
    actions: list[ActionPublic]
    unavailable: list[ActionPublic]
    history: list[Transition]


class ActionRequest(BaseModel):
    """Optional data carried with an action (the state step's output ``payload``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"payload": {"comment": "Looks good"}}]},
    )

    payload: Any = None


def actions_of(view: ActionsView) -> RunActions:
    where = view.where
    return RunActions(
        run_id=view.run.id,
        run_status=view.run.status.value,
        state=where.state,
        status=where.status,
        actions=[ActionPublic(id=a.id, name=a.name, to_state=a.to_state) for a in where.allowed],
        unavailable=[
            ActionPublic(id=a.id, name=a.name, to_state=a.to_state, reason=reason)
            for a, reason in where.unavailable
        ],
        history=[Transition.model_validate(h) for h in view.history],
    )


@router.get(
    "/runs/{run_id}/actions",
    response_model=RunActions,
    summary="List the actions a state-machine run accepts now",
    responses=documented(404, 409),
)
async def list_actions(service: ServiceDep, run_id: str) -> RunActions:
    """The run's current state, the actions allowed from it now, the other actions of that
    state with the reason each is refused, and every transition so far (who and when).
    409 when the run's workflow is not a state machine."""
    return actions_of(await service.run_actions(run_id))


@router.post(
    "/runs/{run_id}/actions/{action}",
    response_model=RunActions,
    summary="Take an action: move a state-machine run",
    responses=documented(404, 409, 422),
)
async def take_action(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    run_id: str,
    action: Annotated[str, Path(pattern=ACTION_ID_PATTERN, examples=["approve"])],
    body: Annotated[ActionRequest | None, Body()] = None,
) -> RunActions:
    """Move the run from its current state with ``action``: when this answers, the run is
    in the target state (``state``) and the next action (``actions``) is accepted at once;
    the target's ``on_enter`` nodes run on workers, after. 409 with the reason for a
    disabled action or target state, an action not allowed from the current state, any
    action once the run is in a final state, and a paused run; 404 for an action the
    workflow does not have. Of two concurrent actions exactly one wins (the other: 409).
    ``history`` is listed by ``GET /runs/{run_id}/actions``."""
    moved = await service.take_action(
        run_id, action, actor=actor, payload=body.payload if body else None, audit=audit
    )
    return actions_of(moved)
