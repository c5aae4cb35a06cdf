"""Schedules: a workflow started by a timetable (a cron expression in a time zone, or a fixed
interval), each tick fired exactly once however many workers poll.

The records and policies live here; the tick arithmetic is pure and lives in
:mod:`flowyard.triggers.schedules.ticks`; the store fires a tick by inserting
``(schedule_id, tick_at)`` under a unique key in the transaction that starts its run
(``store/schedules.py``), so the loser of a race between workers does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

from flowyard.domain.ids import RunId, WorkflowId, new_ulid
from flowyard.domain.records import NewRun

ScheduleId = NewType("ScheduleId", str)

#: Bounds of what a schedule may ask for: bounded inputs are part of every feature.
MAX_CATCH_UP = 1000
DEFAULT_MAX_CATCH_UP = 10
MAX_JITTER_S = 3600.0
MIN_EVERY_S = 1
MAX_EVERY_S = 366 * 86400
DEFAULT_MISFIRE_GRACE_S = 60.0
MAX_MISFIRE_GRACE_S = 86400.0
#: Schedule names: like workflow names, short and readable in URLs and logs.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


def new_schedule_id() -> ScheduleId:
    """A fresh, time-ordered schedule id (``sch_`` prefix)."""
    return ScheduleId(f"sch_{new_ulid()}")


class CatchUp(StrEnum):
    """What a scheduler that was down (or a tick later than its grace) does with the ticks
    it missed."""

    #: Fire none of them: the next tick on time is the next run.
    SKIP = "skip"
    #: One run stands for all of them (the latest missed tick).
    ONE = "one"
    #: A run for each, the latest ``max_catch_up`` of them.
    ALL = "all"


class Overlap(StrEnum):
    """What a tick does while the schedule's previous run has not finished."""

    #: Start the run anyway.
    ALLOW = "allow"
    #: Start nothing; the tick is recorded as skipped.
    SKIP = "skip"
    #: Cancel the previous run (the service's lifecycle path), then start.
    CANCEL_PREVIOUS = "cancel_previous"


class TickOutcome(StrEnum):
    """What became of a recorded tick."""

    #: A run was started (its id is on the fire).
    FIRED = "fired"
    #: No run by policy (overlap: skip) or because the run could not start (the workflow
    #: was archived, the input no longer fits its schema): ``reason`` says which.
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What a schedule's owner sets. Exactly one of ``cron`` and ``every_s``."""

    name: str
    workflow_id: WorkflowId
    cron: str | None
    every_s: int | None
    timezone: str
    #: The first tick of an interval schedule (ticks are ``anchor_at + k * every_s``).
    anchor_at: datetime
    input: Any
    catch_up: CatchUp = CatchUp.SKIP
    max_catch_up: int = DEFAULT_MAX_CATCH_UP
    jitter_s: float = 0.0
    overlap: Overlap = Overlap.ALLOW
    #: A tick fired later than this after it was due counts as missed (``catch_up``).
    misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A stored schedule and where its timetable stands."""

    id: ScheduleId
    spec: ScheduleSpec
    #: The next tick to fire (its identity in the fires table); None: it never fires again.
    next_tick_at: datetime | None
    #: When that tick is due: the tick plus its jitter (what the due query orders by).
    next_fire_at: datetime | None
    last_tick_at: datetime | None
    last_run_id: RunId | None
    fired: int
    skipped: int
    missed: int
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleFire:
    """One recorded tick: unique per (schedule, tick)."""

    schedule_id: ScheduleId
    tick_at: datetime
    outcome: TickOutcome
    run_id: RunId | None
    fired_at: datetime
    reason: str | None = None
    #: Fired by ``POST .../trigger`` (outside the timetable).
    manual: bool = False


@dataclass(frozen=True, slots=True)
class TickFire:
    """One tick of a fire plan: start ``run`` (when given) or record it skipped."""

    tick_at: datetime
    run: NewRun | None
    reason: str | None = None
    manual: bool = False


@dataclass(frozen=True, slots=True)
class Advance:
    """Where the timetable goes after a fire: the next tick and when it is due, and how many
    ticks were passed over (missed) on the way."""

    next_tick_at: datetime | None
    next_fire_at: datetime | None
    missed: int = 0
