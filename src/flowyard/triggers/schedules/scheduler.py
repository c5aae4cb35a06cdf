"""The scheduler: a small loop beside every worker's loops that fires due schedules.

Every worker process runs one; there is no leader. A pass reads the due schedules with one
indexed query, asks :mod:`.ticks` what each fires (catch-up, jitter), applies the overlap
policy, and hands the plan to the store, which records each tick under its unique
(schedule, tick) key in the transaction that starts its run. Of several schedulers racing for
a tick, one records it and the others write nothing (``fire_schedule`` answers None): each
tick fires exactly once however many workers and machines poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from flowyard.domain.clock import utc_now
from flowyard.domain.errors import Conflict, FlowyardError, NotFound, StoreUnavailable
from flowyard.domain.records import NewRun, RunRecord
from flowyard.domain.schedules import (
    Advance,
    Overlap,
    ScheduleFire,
    ScheduleRecord,
    ScheduleSpec,
    TickFire,
    TickOutcome,
)
from flowyard.observability import Metrics
from flowyard.store.ports import RunStore, ScheduleStore
from flowyard.triggers.schedules.ticks import Policy, plan, timetable

_log = logging.getLogger("flowyard.scheduler")


class SchedulerStore(ScheduleStore, RunStore, Protocol):
    """What a scheduler reads and writes: schedules and their ticks, and runs (the overlap
    policy reads the previous run)."""


class ScheduledRuns(Protocol):
    """The service's run use cases a scheduler needs (``FlowyardService`` has them)."""

    async def prepare_run(
        self,
        ref: str,
        input: Any,
        *,
        actor: str,
        idempotency_key: str,
        schedule_id: str,
    ) -> tuple[NewRun, str]:
        """A checked, not yet started run of the workflow's latest version, and its name."""
        ...

    async def cancel_run(
        self, run_id: str, *, actor: str | None = None, reason: str | None = None
    ) -> RunRecord:
        """Cancel a run through the lifecycle path (Conflict once it has ended)."""
        ...


def schedule_actor(record: ScheduleRecord) -> str:
    """Who a schedule's runs and cancellations are recorded as."""
    return f"schedule:{record.spec.name}"


def tick_key(record: ScheduleRecord, tick: datetime) -> str:
    """The idempotency key of a tick's run (a second guard beside the tick's unique key)."""
    return f"schedule:{record.id}:{tick.isoformat()}"


def policy_for(schedule_id: str, spec: ScheduleSpec) -> Policy:
    """The catch-up and jitter settings of a schedule."""
    return Policy(
        schedule_id, spec.catch_up, spec.max_catch_up, spec.misfire_grace_s, spec.jitter_s
    )


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Tuning of one scheduler."""

    #: Longest sleep between due reads (a schedule created in another process is seen
    #: within this; in this process :meth:`Scheduler.wake` is immediate).
    poll_s: float = 1.0
    #: Schedules fired per pass at most (the rest on the next pass, at once).
    batch: int = 100
    #: Fired ticks older than this are pruned (history only).
    keep_fires_s: float = 7 * 86400
    prune_every_s: float = 600.0


class Scheduler:
    """Fires due schedules until cancelled (it runs as a worker's companion task)."""

    def __init__(
        self,
        store: SchedulerStore,
        runs: ScheduledRuns,
        config: SchedulerConfig | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        metrics: Metrics | None = None,
        on_fired: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.runs = runs
        self.config = config or SchedulerConfig()
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.on_fired = on_fired
        self._wake = asyncio.Event()
        self._pruned_at: datetime | None = None

    def wake(self) -> None:
        """Read the due schedules now (one was created or changed in this process)."""
        self._wake.set()

    async def run(self) -> None:
        """Pass, sleep until the next due time (at most ``poll_s``), repeat; a database
        outage backs off instead of ending the loop."""
        backoff = self.config.poll_s
        while True:
            try:
                sleep_s = await self.run_once()
                backoff = self.config.poll_s
            except StoreUnavailable as exc:
                _log.warning("scheduler: store unavailable, backing off: %s", exc)
                sleep_s, backoff = backoff, min(backoff * 2, 30.0)
            except Exception:  # the loop outlives any one failure; the log says which
                _log.exception("scheduler: pass failed")
                sleep_s = self.config.poll_s
            self._wake.clear()
            if sleep_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep_s):
                        await self._wake.wait()

    async def run_once(self) -> float:
        """One pass: fire what is due; how long to sleep before the next."""
        now = self.clock()
        horizon = now + timedelta(seconds=self.config.poll_s)
        due = await self.store.due_schedules(now, until=horizon, limit=self.config.batch)
        soonest = horizon
        for record in due:
            if record.next_fire_at is None:
                continue
            if record.next_fire_at > now:
                soonest = min(soonest, record.next_fire_at)
                continue
            try:
                advance = await self.fire(record, now)
            except StoreUnavailable:
                raise
            except Exception:  # one broken schedule must not stop the others
                _log.exception("scheduler: schedule %s could not fire", record.spec.name)
                continue
            if advance.next_fire_at is not None:
                soonest = min(soonest, advance.next_fire_at)
        await self._prune(now)
        if len(due) == self.config.batch and all(
            r.next_fire_at is not None and r.next_fire_at <= now for r in due
        ):
            return 0.0  # a backlog: the next pass at once
        return max(0.0, (soonest - self.clock()).total_seconds())

    async def fire(self, record: ScheduleRecord, now: datetime) -> Advance:
        """Fire one due schedule's ticks; where its timetable goes next. When another worker
        fired them first, nothing is written here, and the answer is the same (the plan is
        the same in every process): this scheduler sleeps until that next tick too."""
        assert record.next_tick_at is not None
        table = timetable(
            record.spec.cron, record.spec.every_s, record.spec.timezone, record.spec.anchor_at
        )
        fire_plan = plan(table, record.next_tick_at, now, policy_for(record.id, record.spec))
        fires, name = await self._fires(record, fire_plan.ticks)
        recorded = await self.store.fire_schedule(
            record.id, record.next_tick_at, fires, fire_plan.advance, self.clock()
        )
        if recorded is not None:  # else another worker fired these ticks
            self._count(recorded, fire_plan.advance.missed, name)
        return fire_plan.advance

    async def trigger(self, record: ScheduleRecord) -> ScheduleFire | None:
        """Fire one run now, outside the timetable (``POST .../trigger``); the overlap policy
        applies. None when another trigger took the same instant."""
        now = self.clock()
        fires, name = await self._fires(record, [now], manual=True)
        recorded = await self.store.fire_schedule(record.id, None, fires, None, now)
        if not recorded:
            return None
        self._count(recorded, 0, name)
        return recorded[0]

    async def _fires(
        self, record: ScheduleRecord, ticks: list[datetime], *, manual: bool = False
    ) -> tuple[list[TickFire], str]:
        """What each tick does: start a run, or be skipped (overlap, or the run cannot
        start). With an overlap policy a pass starts one run at most: its latest tick.
        Returns them with the workflow's name (for metrics)."""
        name = "unknown"
        if not ticks:
            return [], name
        spec = record.spec
        reasons: dict[datetime, str] = {}
        if spec.overlap != Overlap.ALLOW:
            for tick in ticks[:-1]:
                reasons[tick] = "overlap: a later tick of the same pass runs"
            blocked = await self._overlap(record)
            if blocked is not None:
                reasons[ticks[-1]] = blocked
        fires = []
        for tick in ticks:
            if tick in reasons:
                fires.append(TickFire(tick, None, reasons[tick], manual))
                continue
            try:
                new, name = await self.runs.prepare_run(
                    spec.workflow_id,
                    spec.input,
                    actor=schedule_actor(record),
                    idempotency_key=tick_key(record, tick),
                    schedule_id=record.id,
                )
            except StoreUnavailable:
                raise
            except FlowyardError as exc:  # archived, or the input no longer fits its schema
                fires.append(TickFire(tick, None, f"not started: {exc}", manual))
                continue
            fires.append(TickFire(tick, new, None, manual))
        return fires, name

    async def _overlap(self, record: ScheduleRecord) -> str | None:
        """Why the next run may not start (overlap ``skip`` while the previous run is
        unfinished), after cancelling that run for ``cancel_previous``; None: start."""
        if record.last_run_id is None:
            return None
        try:
            previous = await self.store.get_run(record.last_run_id)
        except NotFound:
            return None
        if previous.status.is_terminal:
            return None
        if record.spec.overlap == Overlap.SKIP:
            return f"overlap: run {previous.id} has not finished"
        with contextlib.suppress(Conflict, NotFound):  # it ended meanwhile
            await self.runs.cancel_run(
                previous.id,
                actor=schedule_actor(record),
                reason="overlap: cancel_previous (the next tick is due)",
            )
        return None

    def _count(self, recorded: list[ScheduleFire], missed: int, workflow: str) -> None:
        started = 0
        for fire in recorded:
            self.metrics.schedule_ticks.labels(fire.outcome.value).inc()
            started += fire.outcome == TickOutcome.FIRED
        if missed:
            self.metrics.schedule_ticks.labels("missed").inc(missed)
        if started:
            self.metrics.runs_started.labels(workflow).inc(started)
            if self.on_fired is not None:
                self.on_fired()

    async def _prune(self, now: datetime) -> None:
        """Now and then, forget fired ticks older than ``keep_fires_s`` (every worker may
        try; the deletes are bounded and idempotent)."""
        every = timedelta(seconds=self.config.prune_every_s)
        if self._pruned_at is not None and now - self._pruned_at < every:
            return
        self._pruned_at = now
        with contextlib.suppress(FlowyardError):
            await self.store.prune_schedule_fires(now - timedelta(seconds=self.config.keep_fires_s))
