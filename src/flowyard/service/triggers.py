"""Event trigger use cases: editors manage event triggers (API and CLI); a posted event
starts every workflow subscribed to its name; the dispatcher starts the targets of run-end
triggers from the event feed; debounce and throttle (shared with hooks) gate each start.

Exactly once (decision 0029): every start carries an idempotency key named by what caused
it (the run-end event's id, the posted event's id, the debounced burst), so two dispatchers
reading the same event, or a loop picking up what a dead one claimed, start one run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from flowyard.domain.auth import AuditEntry
from flowyard.domain.credentials import is_valid_name
from flowyard.domain.errors import Conflict, InvalidInput, NotFound, Problem
from flowyard.domain.records import RunRecord
from flowyard.domain.triggers import (
    EVENT_ID_MAX,
    Controls,
    EndedRun,
    EventTriggerChange,
    EventTriggerRecord,
    NewEventTrigger,
    On,
    PendingStart,
    TriggerConfig,
    TriggerKind,
    trigger_source,
)
from flowyard.engine.validation import pointer_from_loc
from flowyard.expressions import ExpressionEngine, ExpressionError
from flowyard.service.runs import check_run_payload
from flowyard.store.ports import EventFeed, TriggerStore
from flowyard.triggers import events as ev

if TYPE_CHECKING:
    from flowyard.service import FlowyardService

_log = logging.getLogger("flowyard.triggers")

#: How long a loop owns the debounced starts it claimed (another loop takes them after).
DEBOUNCE_LEASE_S = 30.0


class TriggerFeedStore(TriggerStore, EventFeed, Protocol):
    """The ports the trigger use cases work over: triggers and the event feed."""


@dataclass(frozen=True, slots=True)
class Gated:
    """What a trigger's start did: ``started`` (``run``; ``created`` False for a repeat),
    ``debounced`` (a pending start due at ``fire_at``) or ``throttled`` (dropped; the window
    frees in ``retry_after_s``)."""

    outcome: str
    run: RunRecord | None = None
    created: bool = False
    fire_at: datetime | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class TriggerOutcome:
    """One subscribed trigger's answer to a posted event."""

    trigger: EventTriggerRecord
    outcome: str
    gated: Gated | None = None
    error: str | None = None


@dataclass
class EventPosted:
    """What a posted event did, per subscribed trigger."""

    name: str
    event_id: str | None
    outcomes: list[TriggerOutcome] = field(default_factory=list)


def _invalid(message: str, pointer: str, code: str = "invalid") -> InvalidInput:
    return InvalidInput(message, [Problem(pointer, message, code)])


def parse_trigger(raw: Mapping[str, Any]) -> tuple[On, TriggerConfig]:
    """An event trigger's ``on`` and configuration from request fields (InvalidInput with
    pointers)."""
    fields = dict(raw)
    try:
        on = On.model_validate(fields.pop("on", None))
    except ValidationError as exc:
        raise _problems("invalid event trigger source", exc, "/on") from None
    try:
        config = TriggerConfig.model_validate(fields)
    except ValidationError as exc:
        raise _problems("invalid event trigger configuration", exc, "") from None
    if on.run is not None:
        config = config.model_copy(update={"statuses": list(on.run.statuses)})
    return on, config


def _problems(message: str, exc: ValidationError, base: str) -> InvalidInput:
    problems = [
        Problem(pointer_from_loc(base, list(err["loc"])), err["msg"], str(err["type"]))
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return InvalidInput(message, problems)


class TriggerService:
    """Event triggers (resources), the event intake, the run-end dispatcher and the gate
    (debounce, throttle) every trigger start passes."""

    def __init__(
        self,
        store: TriggerFeedStore,
        service: FlowyardService,
        expressions: ExpressionEngine,
        *,
        clock: Callable[[], datetime],
        debounce_lease_s: float = DEBOUNCE_LEASE_S,
    ) -> None:
        self.store = store
        self.service = service
        self.expressions = expressions
        self.clock = clock
        self.debounce_lease_s = debounce_lease_s

    # -- management ------------------------------------------------------------------------

    def check_controls(self, controls: Controls, pointer: str = "") -> None:
        """Debounce and throttle key templates compile (InvalidInput)."""
        for name, control in (("debounce", controls.debounce), ("throttle", controls.throttle)):
            if control is not None and control.key:
                self._check_template(control.key, f"{pointer}/{name}/key")

    def _check_template(self, source: str, pointer: str) -> None:
        try:
            self.expressions.check_template(source)
        except ExpressionError as exc:
            raise _invalid(f"template at {pointer}: {exc}", pointer, "expression") from None

    def _check(self, config: TriggerConfig) -> None:
        if config.filter is not None:
            try:
                self.expressions.check_condition(config.filter)
            except ExpressionError as exc:
                raise _invalid(f"filter: {exc}", "/filter", "expression") from None
        for pointer, source in self.expressions.find_templates(config.input):
            self._check_template(source, "/input" + pointer)
        self.check_controls(config)

    async def create(
        self,
        *,
        name: str,
        workflow: str,
        on: On,
        config: TriggerConfig,
        enabled: bool = True,
        actor: str | None = None,
        audit: AuditEntry | None = None,
    ) -> EventTriggerRecord:
        """Create an event trigger starting ``workflow`` (id or name): InvalidInput,
        NotFound, Conflict. A run-end trigger may not start its own source workflow (each
        run would start the next)."""
        if not is_valid_name(name):
            raise _invalid(
                "a trigger name is lower-case letters, digits, _ . -", "/name", "pattern"
            )
        target = await self.service.get_workflow(workflow)
        source_id = None
        if on.run is not None:
            source_id = (await self.service.get_workflow(on.run.workflow)).id
            if source_id == target.id:
                raise _invalid(
                    "a run-end trigger cannot start the workflow whose runs fire it",
                    "/on/run/workflow",
                    "loop",
                )
        self._check(config)
        kind = TriggerKind.RUN if on.run is not None else TriggerKind.EVENT
        new = NewEventTrigger(name, kind, target.id, source_id, on.event, enabled, config, actor)
        return await self.store.create_event_trigger(new, self.clock(), audit=audit)

    async def get(self, ref: str) -> EventTriggerRecord:
        """An event trigger by id or name (NotFound)."""
        return await self.store.get_event_trigger(ref)

    async def list(
        self,
        *,
        workflow: str | None = None,
        event: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[EventTriggerRecord]:
        """Event triggers by name: of one target workflow, or listening to one event."""
        workflow_id = (await self.service.get_workflow(workflow)).id if workflow else None
        return await self.store.list_event_triggers(
            workflow_id=workflow_id, event=event, limit=limit, after=after
        )

    async def update(
        self,
        ref: str,
        *,
        enabled: bool | None = None,
        config: TriggerConfig | None = None,
        audit: AuditEntry | None = None,
    ) -> EventTriggerRecord:
        """Enable, disable or reconfigure an event trigger (its source and target stay)."""
        if config is not None:
            current = await self.store.get_event_trigger(ref)
            config = config.model_copy(update={"statuses": current.config.statuses})
            self._check(config)
        change = EventTriggerChange(enabled, config)
        return await self.store.update_event_trigger(ref, change, self.clock(), audit=audit)

    async def delete(self, ref: str, *, audit: AuditEntry | None = None) -> None:
        """Delete an event trigger and its pending debounced starts."""
        await self.store.delete_event_trigger(ref, audit=audit)

    # -- the gate --------------------------------------------------------------------------

    async def _key(self, template: str, scope: Mapping[str, Any]) -> str:
        if not template:
            return ""
        value = await self.expressions.render_value_async(template, scope)
        return ev.digest(ev.key_text(value))

    async def _check_input(self, workflow_id: str, run_input: Any) -> None:
        """The input fits the latest version's input schema (InvalidInput)."""
        record = await self.service.get_workflow(workflow_id)
        wf = await self.service.compiled(record.id, record.latest_version)
        problems = check_run_payload(wf, run_input, None)
        if problems:
            raise InvalidInput("the run input is invalid", problems)

    async def start_gated(
        self,
        source: str,
        workflow_id: str,
        run_input: Any,
        scope: Mapping[str, Any],
        controls: Controls,
        *,
        idempotency_key: str | None,
        actor: str,
        audit: AuditEntry | None = None,
    ) -> Gated:
        """Start a run of ``workflow_id`` through ``controls``: debounce notes a pending
        start (the run starts later, once, with the latest input), throttle drops the start
        beyond its limit; otherwise the run starts now. ``source`` names the trigger or
        hook (``et:<id>``, ``hk:<id>``). Raises InvalidInput (the input), ExpressionError
        (a key template failed), Conflict/NotFound (the target workflow)."""
        keyed = {**scope, "input": run_input}
        if controls.debounce is not None:
            key = await self._key(controls.debounce.key, keyed)
            # The input is checked now, not when the run starts: a bad event is refused to
            # its sender instead of failing silently a period later.
            await self._check_input(workflow_id, run_input)
            now = self.clock()
            fire_at = now + timedelta(seconds=controls.debounce.period)
            pending = await self.store.debounce_start(
                source, key, workflow_id, run_input, actor, fire_at, now
            )
            return Gated("debounced", fire_at=pending.fire_at)
        if controls.throttle is not None:
            throttle = controls.throttle
            key = await self._key(throttle.key, keyed)
            verdict = await self.store.throttle_take(
                source, key, throttle.limit, throttle.period, self.clock()
            )
            if not verdict.allowed:
                return Gated("throttled", retry_after_s=verdict.retry_after_s)
        run, created = await self.service.start_run(
            workflow_id, run_input, idempotency_key=idempotency_key, actor=actor, audit=audit
        )
        return Gated("started", run=run, created=created)

    # -- named events ----------------------------------------------------------------------

    async def post_event(
        self,
        name: str,
        payload: Any,
        *,
        event_id: str | None = None,
        audit: AuditEntry | None = None,
    ) -> EventPosted:
        """Start every workflow subscribed to the event ``name`` (each trigger's filter,
        input template, debounce and throttle apply). With ``event_id`` a repeat of the
        event starts nothing new: each trigger's run is found by its idempotency key."""
        if event_id is not None and not (0 < len(event_id) <= EVENT_ID_MAX):
            raise _invalid(f"an event id is 1 to {EVENT_ID_MAX} characters", "/event_id")
        posted = EventPosted(name, event_id)
        scope = ev.event_scope(name, event_id, payload)
        for trigger in await self.store.triggers_for_event(name):
            key = ev.event_key(trigger.id, event_id) if event_id is not None else None
            posted.outcomes.append(await self._fire(trigger, scope, payload, key, audit))
        return posted

    async def _fire(
        self,
        trigger: EventTriggerRecord,
        scope: Mapping[str, Any],
        default_input: Any,
        idempotency_key: str | None,
        audit: AuditEntry | None,
    ) -> TriggerOutcome:
        """One trigger's start for one event: filtered, or gated and started; a failure of
        this trigger (its templates, its target's input schema) is its outcome, not the
        other triggers'."""
        config = trigger.config
        try:
            if config.filter is not None and not await self.expressions.test_async(
                config.filter, scope
            ):
                return TriggerOutcome(trigger, "filtered")
            run_input = default_input
            if config.input is not None:
                run_input = await self.expressions.render_value_async(config.input, scope)
            gated = await self.start_gated(
                trigger_source(trigger.id),
                trigger.workflow_id,
                run_input,
                scope,
                config,
                idempotency_key=idempotency_key,
                actor=f"trigger:{trigger.name}",
                audit=audit,
            )
        except ExpressionError as exc:
            return TriggerOutcome(trigger, "failed", error=f"template or filter: {exc}")
        except (InvalidInput, Conflict, NotFound) as exc:
            return TriggerOutcome(trigger, "failed", error=exc.message)
        return TriggerOutcome(trigger, gated.outcome, gated)

    # -- the dispatcher's loops ------------------------------------------------------------

    async def dispatch_run_ends(self, limit: int = 200) -> int:
        """Start the targets of run-end triggers for runs that ended since the cursor;
        returns how many run ends were read. Without any enabled run-end trigger this is
        one indexed read and nothing else (the normal drain pays nothing for the feature).

        Reads only up to the event horizon (ids commit out of order on PostgreSQL), starts
        each target with the idempotency key of (trigger, event), and then moves the
        cursor by compare-and-set: a dispatcher that dies before moving it leaves the
        events to the next one, which finds the runs already started."""
        triggers = await self.store.run_triggers()
        if not triggers:
            return 0
        horizon = await self.store.event_horizon()
        if horizon is None:
            return 0
        cursor = await self.store.trigger_cursor(ev.RUN_END_CURSOR)
        # A trigger fires for runs that ended after it was made: older history is skipped.
        start = max(cursor, min(t.since_event_id for t in triggers))
        if start >= horizon:
            return 0
        by_source: dict[str, list[EventTriggerRecord]] = {}
        for trigger in triggers:
            if trigger.source_workflow_id is not None:
                by_source.setdefault(trigger.source_workflow_id, []).append(trigger)
        ended = await self.store.ended_runs(
            after=start, upto=horizon, workflow_ids=list(by_source), limit=limit
        )
        for one in ended:
            for trigger in by_source.get(one.workflow_id, []):
                if one.event_id > trigger.since_event_id and one.status in trigger.config.statuses:
                    await self._fire_run_end(trigger, one)
        position = ended[-1].event_id if len(ended) == limit else horizon
        await self.store.move_trigger_cursor(ev.RUN_END_CURSOR, cursor, position, self.clock())
        return len(ended)

    async def _fire_run_end(self, trigger: EventTriggerRecord, ended: EndedRun) -> None:
        scope = ev.run_scope(ended, trigger.source_workflow_name)
        key = ev.run_end_key(trigger.id, ended)
        outcome = await self._fire(trigger, scope, ended.output, key, None)
        if outcome.outcome == "failed":
            # Nobody to answer: the log says why the target did not start.
            _log.warning(
                "event trigger %s did not start %s for run %s: %s",
                trigger.name,
                trigger.workflow_name,
                ended.run_id,
                outcome.error,
            )

    async def fire_debounced(self, limit: int = 50) -> int:
        """Start the runs of due debounced starts (claimed, so each loop takes its own);
        returns how many were started or found started."""
        pending = await self.store.claim_debounced(self.clock(), self.debounce_lease_s, limit)
        for one in pending:
            await self._start_pending(one)
        return len(pending)

    async def _start_pending(self, pending: PendingStart) -> None:
        try:
            await self.service.start_run(
                pending.workflow_id,
                pending.input,
                idempotency_key=ev.debounce_key(pending),
                actor=pending.actor,
            )
        except (InvalidInput, Conflict, NotFound) as exc:
            # The input was checked when the event came; the workflow may have been
            # archived or changed since. Dropped, and said so.
            _log.warning("debounced start of %s dropped: %s", pending.source, exc)
        await self.store.finish_debounced(pending)


class TriggerDispatcher:
    """The loop every worker process runs beside its workers: run-end triggers from the
    event feed, then due debounced starts, every ``interval_s``. Any number of dispatchers
    may share a database (each start has its idempotency key; claims and the cursor's
    compare-and-set split the work)."""

    def __init__(self, triggers: TriggerService, *, interval_s: float) -> None:
        self.triggers = triggers
        self.interval_s = interval_s
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()

    async def run_once(self) -> int:
        """One pass: run ends read plus debounced starts made."""
        return await self.triggers.dispatch_run_ends() + await self.triggers.fire_debounced()

    async def run(self) -> None:
        """Pass until stopped; a failed pass (the database away) is logged and retried."""
        while not self._stop.is_set():
            busy = 0
            try:
                busy = await self.run_once()
            except Exception:
                _log.exception("trigger dispatch failed; retrying")
            if busy:
                continue  # a backlog: read on at once
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._stop.wait()
