"""Tick arithmetic of schedules, pure: timetables (cron in a time zone, fixed intervals), the
next ticks, jitter, and what one pass of the scheduler fires after a given moment (the
catch-up policy). No database, no clock: every function takes ``now``.

Cron expressions are croniter's (decision 0026): 5 fields, or 6 with *seconds first*
(``"*/10 * * * * *"``: every 10 s), or an ``@hourly``-style alias. They are evaluated on the
*wall clock* of the schedule's IANA time zone, and every wall time the expression names fires
exactly once:

- spring forward (a wall time that does not exist, 02:30 when clocks jump 02:00 -> 03:00)
  fires as if the clock had not jumped: shifted by the gap (03:30); a shifted tick that lands
  on another tick's instant fires once;
- fall back (a wall time that happens twice, 02:30 when clocks go 03:00 -> 02:00) fires at
  its first occurrence only (summer time); the repeated hour fires nothing.

Intervals (``every``) are plain elapsed time from their anchor, blind to time zones.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from flowyard.domain.durations import parse_duration
from flowyard.domain.schedules import (
    MAX_EVERY_S,
    MIN_EVERY_S,
    Advance,
    CatchUp,
)

#: croniter's aliases (5-field expressions under another name).
ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
MAX_CRON_CHARS = 200
#: How far a DST transition can move the wall clock (Lord Howe moves 30 min, most zones 1 h,
#: a few historic ones 2 h): wall times this close to a jump are checked one by one.
_MAX_SHIFT = timedelta(hours=3)
#: Bounds of the walks below, so no expression or downtime makes one pass unbounded.
_MAX_WALK = 100_000
#: Missed ticks are counted up to this many (for metrics and the schedule's counter).
MISSED_COUNT_CAP = 10_000
_MICRO = timedelta(microseconds=1)


class Timetable(Protocol):
    """When a schedule ticks: instants in UTC."""

    def next_after(self, t: datetime) -> datetime | None:
        """The first tick strictly after ``t`` (None: it never ticks again)."""
        ...

    def ticks_after(self, t: datetime) -> Iterator[datetime]:
        """The ticks strictly after ``t``, in order (cheaper than repeated next_after)."""
        ...


@dataclass(frozen=True, slots=True)
class Every:
    """A tick every ``every_s`` seconds from ``anchor_at`` (ticks before it do not exist)."""

    every_s: int
    anchor_at: datetime

    def next_after(self, t: datetime) -> datetime | None:
        """``anchor_at + k * every_s`` for the smallest k with a tick after ``t``."""
        if t < self.anchor_at:
            return self.anchor_at
        step = timedelta(seconds=self.every_s)
        k = (t - self.anchor_at) // step + 1
        return self.anchor_at + k * step

    def ticks_after(self, t: datetime) -> Iterator[datetime]:
        """The ticks after ``t``, one interval apart."""
        tick = self.next_after(t)
        assert tick is not None  # an interval never ends
        step = timedelta(seconds=self.every_s)
        while True:
            yield tick
            tick += step


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression on the wall clock of ``timezone`` (see the module's DST rules)."""

    expression: str
    timezone: str

    @property
    def seconds(self) -> bool:
        """The expression has a seconds field (6 fields, seconds first)."""
        return len(self.expression.split()) == 6

    def next_after(self, t: datetime) -> datetime | None:
        """The first tick strictly after ``t``: croniter walks naive wall times, each is
        placed with ``fold=0`` (a missing time lands after the gap, a repeated one at its
        first occurrence), and the first instant after ``t`` wins."""
        tz = ZoneInfo(self.timezone)
        start = t.astimezone(tz).replace(tzinfo=None)
        jumped = _offset(tz, t) - _offset(tz, t - _MAX_SHIFT)
        if jumped > timedelta(0):
            # The clock jumped forward in the last hours: wall times in that gap fire shifted
            # by the gap, so some behind ``start`` on the wall clock may still be ahead of t.
            start -= jumped
        walk = croniter(self.expression, start, second_at_beginning=self.seconds)
        for _ in range(_MAX_WALK):
            try:
                wall: datetime = walk.get_next(datetime)
            except CroniterBadDateError:
                return None  # e.g. "0 0 30 2 *": no such date
            instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
            if instant > t:
                return instant
        return None

    def ticks_after(self, t: datetime) -> Iterator[datetime]:
        """The ticks after ``t``: one croniter walks on while the UTC offset stays the same
        (wall time and instant then move together); near a DST transition each tick is
        found afresh by :meth:`next_after`."""
        tz = ZoneInfo(self.timezone)
        while True:
            tick = self.next_after(t)
            if tick is None:
                return
            yield tick
            offset = _offset(tz, tick)
            wall = tick.astimezone(tz).replace(tzinfo=None)
            walk = croniter(self.expression, wall, second_at_beginning=self.seconds)
            t = tick
            for _ in range(_MAX_WALK):
                try:
                    wall = walk.get_next(datetime)
                except CroniterBadDateError:
                    return
                instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
                if _offset(tz, instant) != offset:
                    break  # a transition lies between: next_after places the next tick
                yield instant
                t = instant


def _offset(tz: ZoneInfo, t: datetime) -> timedelta:
    offset = t.astimezone(tz).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


# -- parsing what people write ---------------------------------------------------------------


def check_timezone(name: str) -> str:
    """An IANA time zone name (``Europe/Berlin``, ``UTC``); ValueError otherwise."""
    if not name or len(name) > 64 or name.startswith("/") or ".." in name:
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
    return name


def check_cron(expression: str) -> str:
    """A cron expression of 5 fields, 6 with seconds first, or an ``@daily``-style alias,
    normalised to single spaces; ValueError with the reason otherwise."""
    text = " ".join(expression.split())
    if len(text) > MAX_CRON_CHARS:
        raise ValueError(f"a cron expression has at most {MAX_CRON_CHARS} characters")
    fields = text.split(" ")
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise ValueError(f"unknown cron alias {text!r} (known: {', '.join(sorted(ALIASES))})")
        return text.lower()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day month weekday) or 6 with "
            f"seconds first; {text!r} has {len(fields)}"
        )
    try:
        valid = croniter.is_valid(text, second_at_beginning=len(fields) == 6)
    except CroniterError:
        valid = False
    if not valid:
        raise ValueError(f"{text!r} is not a valid cron expression")
    return text


def parse_every(value: object) -> int:
    """Whole seconds of an interval (``"30s"``, ``"5m"``, ``"1h"``, ``90``); ValueError."""
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise ValueError(f"an interval is whole seconds; {value!r} is {seconds} s")
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise ValueError(f"an interval is between {MIN_EVERY_S} s and 366 days; {value!r} is not")
    return int(seconds)


def format_every(every_s: int) -> str:
    """The shortest way to write an interval: ``90s`` stays seconds, ``300`` is ``5m``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if every_s % size == 0:
            return f"{every_s // size}{unit}"
    return f"{every_s}s"


def timetable(
    cron: str | None, every_s: int | None, timezone: str, anchor_at: datetime
) -> Timetable:
    """The timetable of a schedule's spec (exactly one of ``cron`` and ``every_s``)."""
    if cron is not None:
        return Cron(cron, timezone)
    if every_s is not None:
        return Every(every_s, anchor_at)
    raise ValueError("a schedule has a cron expression or an interval")


def upcoming(table: Timetable, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` ticks after ``after`` (fewer when the timetable ends)."""
    ticks: list[datetime] = []
    if count <= 0:
        return ticks
    for tick in table.ticks_after(after):
        ticks.append(tick)
        if len(ticks) == count:
            break
    return ticks


def first_at_or_after(table: Timetable, t: datetime) -> datetime | None:
    """The first tick at ``t`` or later."""
    return table.next_after(t - _MICRO)


# -- jitter ----------------------------------------------------------------------------------


def jitter(schedule_id: str, tick: datetime, jitter_s: float) -> timedelta:
    """A delay in [0, jitter_s] for this tick, the same in every process (a hash of the
    schedule and the tick, to the millisecond): every worker agrees when the tick is due."""
    if jitter_s <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_id}|{tick.isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(milliseconds=math.floor(fraction * jitter_s * 1000))


# -- one pass of the scheduler ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What one pass fires for a due schedule: the ticks (oldest first) and the advance."""

    ticks: list[datetime]
    advance: Advance


@dataclass(frozen=True, slots=True)
class Policy:
    """The parts of a schedule that decide a pass."""

    schedule_id: str
    catch_up: CatchUp
    max_catch_up: int
    misfire_grace_s: float
    jitter_s: float

    def due(self, tick: datetime) -> datetime:
        """When ``tick`` fires: the tick plus its jitter."""
        return tick + jitter(self.schedule_id, tick, self.jitter_s)


def plan(table: Timetable, due_tick: datetime, now: datetime, policy: Policy) -> FirePlan:
    """The ticks to fire at ``now`` from ``due_tick`` on, and the next tick.

    A tick fires *on time* when ``now`` is within ``misfire_grace_s`` of its due time; older
    ones were *missed* (the scheduler was down, or every worker was stalled) and the catch-up
    policy picks among them: ``skip`` none, ``one`` the latest, ``all`` the latest
    ``max_catch_up``. The others count as missed. Ticks far behind are not walked one by one:
    the latest of them are found backwards from the edge of the grace period."""
    grace = timedelta(seconds=policy.misfire_grace_s)
    # Ticks before this are late whatever their jitter: counted and searched, not walked.
    edge = now - grace - timedelta(seconds=policy.jitter_s)
    wanted = {CatchUp.SKIP: 0, CatchUp.ONE: 1, CatchUp.ALL: policy.max_catch_up}[policy.catch_up]

    on_time: list[datetime] = []
    late: list[datetime] = []
    tick: datetime | None = None
    walk = table.ticks_after(max(due_tick, edge) - _MICRO)
    for _ in range(_MAX_WALK):
        tick = next(walk, None)
        if tick is None or policy.due(tick) > now:
            break
        (on_time if policy.due(tick) >= now - grace else late).append(tick)
    far = _count_before(table, due_tick, edge) if due_tick < edge else 0
    behind = far + len(late)
    if len(late) < wanted and far:
        late[:0] = _latest_before(table, edge, due_tick, wanted - len(late))
    caught = late[-wanted:] if wanted else []
    missed = min(behind - len(caught), MISSED_COUNT_CAP)
    nxt = tick
    return FirePlan(
        caught + on_time,
        Advance(nxt, policy.due(nxt) if nxt is not None else None, missed),
    )


def _count_before(table: Timetable, start: datetime, end: datetime) -> int:
    """Ticks in [start, end), counted up to MISSED_COUNT_CAP."""
    if isinstance(table, Every):
        first = first_at_or_after(table, start)
        if first is None or first >= end:
            return 0
        return min(math.ceil((end - first) / timedelta(seconds=table.every_s)), MISSED_COUNT_CAP)
    count = 0
    for tick in table.ticks_after(start - _MICRO):
        if tick >= end or count == MISSED_COUNT_CAP:
            break
        count += 1
    return count


def _latest_before(table: Timetable, end: datetime, floor: datetime, count: int) -> list[datetime]:
    """The latest ``count`` ticks in [floor, end), oldest first."""
    found: list[datetime] = []
    while len(found) < count:
        tick = last_before(table, end, floor)
        if tick is None:
            break
        found.append(tick)
        end = tick
    found.reverse()
    return found


def last_before(table: Timetable, end: datetime, floor: datetime) -> datetime | None:
    """The latest tick in [floor, end), found with forward steps only: probe windows
    [end - d, end) of doubling width d until one holds a tick, then walk that window (it
    holds few: the half of it nearer ``end`` held none)."""
    width = timedelta(seconds=1)
    while True:
        start = max(end - width, floor)
        latest: datetime | None = None
        for tick in table.ticks_after(start - _MICRO):
            if tick >= end:
                break
            latest = tick
        if latest is not None:
            return latest
        if start <= floor:
            return None
        width *= 2
