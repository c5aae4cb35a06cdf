"""Schedule use cases shared by the API and the CLI: create, read (with the next fire
times), change, pause, resume, trigger now, delete. Workers fire the ticks
(:mod:`flowyard.triggers.schedules.scheduler`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import Conflict, InvalidInput, Problem
from flowyard.domain.ids import WorkflowId
from flowyard.domain.schedules import (
    DEFAULT_MAX_CATCH_UP,
    DEFAULT_MISFIRE_GRACE_S,
    MAX_CATCH_UP,
    MAX_JITTER_S,
    MAX_MISFIRE_GRACE_S,
    NAME_PATTERN,
    Advance,
    CatchUp,
    Overlap,
    ScheduleFire,
    ScheduleRecord,
    ScheduleSpec,
    new_schedule_id,
)
from flowyard.store.ports import ScheduleStore, WorkflowStore
from flowyard.triggers.schedules.scheduler import ScheduledRuns, Scheduler, policy_for
from flowyard.triggers.schedules.ticks import (
    check_cron,
    check_timezone,
    parse_every,
    timetable,
    upcoming,
)

#: How many fire times a read shows.
UPCOMING = 5
_NAME = re.compile(NAME_PATTERN)
_UNSET: Any = object()


@dataclass(slots=True)
class ScheduleChange:
    """What a create sets or a change replaces (``_UNSET``: keep; a create needs ``name``,
    ``workflow`` and one of ``cron``/``every``)."""

    name: Any = _UNSET
    workflow: Any = _UNSET
    cron: Any = _UNSET
    every: Any = _UNSET
    timezone: Any = _UNSET
    start_at: Any = _UNSET
    input: Any = _UNSET
    catch_up: Any = _UNSET
    max_catch_up: Any = _UNSET
    jitter_s: Any = _UNSET
    overlap: Any = _UNSET
    misfire_grace_s: Any = _UNSET
    enabled: Any = _UNSET

    @classmethod
    def of(cls, values: dict[str, Any]) -> ScheduleChange:
        """From a dict of the fields given (unknown keys are the caller's to refuse)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def given(self, name: str) -> bool:
        """The change sets ``name``."""
        return getattr(self, name) is not _UNSET


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule with its next fire times."""

    record: ScheduleRecord
    upcoming: list[datetime]
    workflow_name: str


class ScheduleServiceStore(ScheduleStore, WorkflowStore, Protocol):
    """Schedules, and workflows (names in views, the workflow filter)."""


class ScheduleService:
    """Schedules by id or name."""

    def __init__(
        self,
        store: ScheduleServiceStore,
        runs: ScheduledRuns,
        scheduler: Scheduler,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.runs = runs
        self.scheduler = scheduler
        self.clock = clock

    async def create(
        self, change: ScheduleChange, *, actor: str, audit: AuditEntry | None = None
    ) -> ScheduleView:
        """A new schedule; InvalidInput (with pointers) for a bad field, NotFound for an
        unknown workflow, Conflict for an archived one or a taken name."""
        now = self.clock()
        for required in ("name", "workflow"):
            if not change.given(required):
                raise InvalidInput(
                    f"{required} is required", [Problem(f"/{required}", "required", "required")]
                )
        base = ScheduleSpec(
            name="",
            workflow_id=WorkflowId(""),
            cron=None,
            every_s=None,
            timezone="UTC",
            anchor_at=now,
            input={},
            max_catch_up=DEFAULT_MAX_CATCH_UP,
            misfire_grace_s=DEFAULT_MISFIRE_GRACE_S,
        )
        spec = await self._apply(base, change, now)
        advance = self._advance(spec, schedule_id := new_schedule_id(), now)
        record = ScheduleRecord(
            id=schedule_id,
            spec=spec,
            next_tick_at=advance.next_tick_at,
            next_fire_at=advance.next_fire_at,
            last_tick_at=None,
            last_run_id=None,
            fired=0,
            skipped=0,
            missed=0,
            created_at=now,
            updated_at=now,
            created_by=actor,
        )
        created = await self.store.create_schedule(record, audit=audit)
        self.scheduler.wake()
        return await self.view(created)

    async def get(self, ref: str) -> ScheduleView:
        """A schedule with its next fire times (NotFound)."""
        return await self.view(await self.store.get_schedule(ref))

    async def record(self, ref: str) -> ScheduleRecord:
        """A schedule alone (NotFound)."""
        return await self.store.get_schedule(ref)

    async def list_schedules(
        self, *, limit: int = 50, after: str | None = None, workflow: str | None = None
    ) -> list[ScheduleView]:
        """Schedules by name after a name cursor, each with its next fire times."""
        workflow_id = None
        if workflow is not None:
            workflow_id = (await self.store.get_workflow(workflow)).id
        records = await self.store.list_schedules(limit=limit, after=after, workflow_id=workflow_id)
        return [await self.view(r) for r in records]

    async def update(
        self, ref: str, change: ScheduleChange, *, audit: AuditEntry | None = None
    ) -> ScheduleView:
        """Change fields; a changed timetable (cron, every, timezone, start_at) or a resume
        starts from the next tick after now; jitter moves the next tick's due time."""
        current = await self.store.get_schedule(ref)
        now = self.clock()
        spec = await self._apply(current.spec, change, now)
        retimed = (
            any(change.given(f) for f in ("cron", "every", "timezone", "start_at"))
            or spec.enabled != current.spec.enabled
        )
        if retimed or current.next_tick_at is None:
            advance = self._advance(spec, current.id, now)
        else:
            due = policy_for(current.id, spec).due(current.next_tick_at)
            advance = Advance(current.next_tick_at, due)
        updated = await self.store.update_schedule(current.id, spec, advance, now, audit=audit)
        self.scheduler.wake()
        return await self.view(updated)

    async def pause(self, ref: str, *, audit: AuditEntry | None = None) -> ScheduleView:
        """Stop firing (ticks while paused are never fired)."""
        return await self.update(ref, ScheduleChange(enabled=False), audit=audit)

    async def resume(self, ref: str, *, audit: AuditEntry | None = None) -> ScheduleView:
        """Fire again from the next tick after now (what passed while paused is not caught
        up)."""
        return await self.update(ref, ScheduleChange(enabled=True), audit=audit)

    async def delete(self, ref: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a schedule and its fired ticks; its runs stay (NotFound)."""
        current = await self.store.get_schedule(ref)
        await self.store.delete_schedule(current.id, audit=audit)

    async def trigger(self, ref: str, *, audit: AuditEntry | None = None) -> ScheduleFire:
        """Fire one run now, outside the timetable (paused or not); the overlap policy
        applies (the tick may be recorded as skipped)."""
        current = await self.store.get_schedule(ref)
        fired = await self.scheduler.trigger(current)
        if fired is None:
            raise Conflict(f"schedule {current.spec.name!r} was just triggered; try again")
        if audit is not None:
            audit.target_type, audit.target_id = "schedule", current.id
            audit.detail = {"outcome": fired.outcome.value, "run_id": fired.run_id}
        return fired

    async def fires(
        self, ref: str, *, limit: int = 50, before: datetime | None = None
    ) -> list[ScheduleFire]:
        """The schedule's recorded ticks, newest first."""
        current = await self.store.get_schedule(ref)
        return await self.store.list_schedule_fires(current.id, limit=limit, before=before)

    async def view(self, record: ScheduleRecord) -> ScheduleView:
        """The record with its next fire times (none while paused)."""
        ticks: list[datetime] = []
        if record.spec.enabled and record.next_tick_at is not None:
            s = record.spec
            table = timetable(s.cron, s.every_s, s.timezone, s.anchor_at)
            ticks = [record.next_tick_at, *upcoming(table, record.next_tick_at, UPCOMING - 1)]
        workflow = await self.store.get_workflow(record.spec.workflow_id)
        return ScheduleView(record, ticks, workflow.name)

    # -- validation ----------------------------------------------------------------------

    def _advance(self, spec: ScheduleSpec, schedule_id: str, now: datetime) -> Advance:
        """The first tick after ``now`` (none while disabled)."""
        if not spec.enabled:
            return Advance(None, None)
        table = timetable(spec.cron, spec.every_s, spec.timezone, spec.anchor_at)
        tick = table.next_after(now)
        if tick is None:
            return Advance(None, None)
        return Advance(tick, policy_for(schedule_id, spec).due(tick))

    async def _check_run(self, workflow: str, input: Any) -> tuple[WorkflowId, str]:
        new, name = await self.runs.prepare_run(
            workflow, input, actor="check", idempotency_key="check", schedule_id="check"
        )
        return new.workflow_id, name

    async def _apply(
        self, spec: ScheduleSpec, change: ScheduleChange, now: datetime
    ) -> ScheduleSpec:
        """``spec`` with ``change`` applied and checked as a whole; every problem at once."""
        check = _Check(change)
        values = {**check.name(), **check.timetable(spec, now), **check.policies()}
        if change.given("enabled"):
            values["enabled"] = bool(change.enabled)
        if change.given("input"):
            values["input"] = change.input
        if check.problems:
            raise InvalidInput("the schedule is invalid", check.problems)
        workflow = change.workflow if change.given("workflow") else spec.workflow_id
        try:
            values["workflow_id"], _ = await self._check_run(
                str(workflow), values.get("input", spec.input)
            )
        except InvalidInput as exc:
            raise InvalidInput(
                "the schedule's input does not fit the workflow", exc.problems
            ) from None
        return replace(spec, **values)


class _Check:
    """The checks of a change's fields, collecting every problem with its pointer."""

    def __init__(self, change: ScheduleChange) -> None:
        self.change = change
        self.problems: list[Problem] = []

    def bad(self, field: str, message: str, code: str = "invalid") -> None:
        self.problems.append(Problem(f"/{field}", message, code))

    def name(self) -> dict[str, Any]:
        if not self.change.given("name"):
            return {}
        name = self.change.name
        if not isinstance(name, str) or not _NAME.match(name):
            self.bad("name", "letters, digits and _.:- (1-64 characters, a letter or digit first)")
            return {}
        return {"name": name}

    def timetable(self, spec: ScheduleSpec, now: datetime) -> dict[str, Any]:
        """cron or every (not both), the time zone, the interval's anchor."""
        c = self.change
        values: dict[str, Any] = {}
        cron, every_s = spec.cron, spec.every_s
        has_cron = c.given("cron") and c.cron is not None
        if has_cron:
            try:
                cron, every_s = check_cron(str(c.cron)), None
            except ValueError as exc:
                self.bad("cron", str(exc), "cron")
        if c.given("every") and c.every is not None:
            if has_cron:
                self.bad("every", "give cron or every, not both", "exclusive")
            else:
                try:
                    every_s, cron = parse_every(c.every), None
                except ValueError as exc:
                    self.bad("every", str(exc), "every")
        if cron is None and every_s is None and not self.problems:
            self.bad("cron", "give a cron expression or an interval (every)", "required")
        values["cron"], values["every_s"] = cron, every_s
        if c.given("timezone"):
            try:
                values["timezone"] = check_timezone(str(c.timezone))
            except ValueError as exc:
                self.bad("timezone", str(exc), "timezone")
        if c.given("start_at") and c.start_at is not None:
            values["anchor_at"] = c.start_at
        elif c.given("every") or c.given("start_at"):
            values["anchor_at"] = now  # a new interval is anchored at the change
        return values

    def policies(self) -> dict[str, Any]:
        """catch_up, overlap and the bounded numbers."""
        values: dict[str, Any] = {}
        for field, enum in (("catch_up", CatchUp), ("overlap", Overlap)):
            if self.change.given(field):
                try:
                    values[field] = enum(getattr(self.change, field))
                except ValueError:
                    self.bad(field, f"one of {', '.join(e.value for e in enum)}", "enum")
        for field, low, high in (
            ("max_catch_up", 1, MAX_CATCH_UP),
            ("jitter_s", 0, MAX_JITTER_S),
            ("misfire_grace_s", 0, MAX_MISFIRE_GRACE_S),
        ):
            if self.change.given(field):
                value = getattr(self.change, field)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    self.bad(field, "a number", "type")
                elif not low <= value <= high:
                    self.bad(field, f"between {low} and {high:g}", "range")
                else:
                    values[field] = int(value) if field == "max_catch_up" else float(value)
        return values
