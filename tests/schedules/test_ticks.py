"""The pure tick arithmetic of schedules: cron with 5 and 6 fields, time zones, DST, intervals,
jitter and the catch-up policies. No database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from flowyard.domain.schedules import CatchUp
from flowyard.triggers.schedules.ticks import (
    Cron,
    Every,
    Policy,
    check_cron,
    check_timezone,
    format_every,
    jitter,
    last_before,
    parse_every,
    plan,
    upcoming,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)  # type: ignore[misc]


def walls(ticks: list[datetime], tz: ZoneInfo) -> list[str]:
    return [t.astimezone(tz).strftime("%m-%d %H:%M:%S%z") for t in ticks]


# -- cron ------------------------------------------------------------------------------------


def test_five_fields_in_utc() -> None:
    ticks = upcoming(Cron("*/15 9 * * MON-FRI", "UTC"), utc(2026, 12, 4, 9, 20), 4)
    # Friday 09:30, 09:45, then Monday 09:00, 09:15.
    assert ticks == [
        utc(2026, 12, 4, 9, 30),
        utc(2026, 12, 4, 9, 45),
        utc(2026, 12, 7, 9, 0),
        utc(2026, 12, 7, 9, 15),
    ]


def test_six_fields_have_seconds_first() -> None:
    ticks = upcoming(Cron("*/20 * * * * *", "UTC"), utc(2026, 1, 1, 0, 0, 5), 3)
    assert ticks == [utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40), utc(2026, 1, 1, 0, 1)]


def test_a_tick_is_strictly_after() -> None:
    table = Cron("0 * * * *", "UTC")
    assert table.next_after(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)


def test_time_zone_is_the_wall_clock() -> None:
    ticks = upcoming(Cron("0 9 * * *", "America/New_York"), utc(2026, 1, 10), 1)
    assert ticks == [utc(2026, 1, 10, 14)]  # 09:00 EST is 14:00 UTC
    ticks = upcoming(Cron("0 9 * * *", "America/New_York"), utc(2026, 7, 10), 1)
    assert ticks == [utc(2026, 7, 10, 13)]  # 09:00 EDT is 13:00 UTC


def test_spring_forward_a_missing_time_fires_shifted_by_the_gap() -> None:
    # Europe/Berlin 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist that day.
    ticks = upcoming(Cron("30 2 * * *", "Europe/Berlin"), local(BERLIN, 2026, 3, 27, 12), 3)
    assert walls(ticks, BERLIN) == [
        "03-28 02:30:00+0100",
        "03-29 03:30:00+0200",  # once, an hour later on the wall clock
        "03-30 02:30:00+0200",
    ]


def test_spring_forward_shifted_ticks_landing_on_others_fire_once() -> None:
    ticks = upcoming(Cron("*/30 * * * *", "Europe/Berlin"), local(BERLIN, 2026, 3, 29, 1, 10), 4)
    assert walls(ticks, BERLIN) == [
        "03-29 01:30:00+0100",
        "03-29 03:00:00+0200",  # 02:00 shifted to 03:00 and 03:00 itself: one tick
        "03-29 03:30:00+0200",
        "03-29 04:00:00+0200",
    ]


def test_spring_forward_a_shifted_tick_is_found_from_after_the_gap() -> None:
    # Created at 03:10 CEST that morning: 02:15 (shifted to 03:15) is still ahead.
    ticks = upcoming(Cron("15 2 * * *", "Europe/Berlin"), local(BERLIN, 2026, 3, 29, 3, 10), 1)
    assert walls(ticks, BERLIN) == ["03-29 03:15:00+0200"]


def test_fall_back_a_repeated_time_fires_once_at_its_first_occurrence() -> None:
    # Europe/Berlin 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    ticks = upcoming(Cron("30 2 * * *", "Europe/Berlin"), local(BERLIN, 2026, 10, 24, 12), 3)
    assert walls(ticks, BERLIN) == [
        "10-25 02:30:00+0200",
        "10-26 02:30:00+0100",
        "10-27 02:30:00+0100",
    ]


def test_fall_back_the_repeated_hour_fires_nothing() -> None:
    ticks = upcoming(Cron("*/30 * * * *", "Europe/Berlin"), local(BERLIN, 2026, 10, 25, 1, 40), 4)
    assert walls(ticks, BERLIN) == [
        "10-25 02:00:00+0200",
        "10-25 02:30:00+0200",
        "10-25 03:00:00+0100",  # the second 02:00 and 02:30 (CET) do not fire
        "10-25 03:30:00+0100",
    ]
    # Asked from inside the repeated hour, the next tick is after it.
    inside = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)
    assert walls(upcoming(Cron("*/30 * * * *", "Europe/Berlin"), inside, 1), BERLIN) == [
        "10-25 03:00:00+0100"
    ]


def test_new_york_dst_with_seconds() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT.
    table = Cron("0 30 2 * * *", "America/New_York")
    ticks = upcoming(table, local(NEW_YORK, 2026, 3, 7, 12), 2)
    assert walls(ticks, NEW_YORK) == ["03-08 03:30:00-0400", "03-09 02:30:00-0400"]


def test_an_expression_that_never_fires_ends() -> None:
    assert Cron("0 0 30 2 *", "UTC").next_after(utc(2026, 1, 1)) is None


@pytest.mark.parametrize(
    ("text", "normalised"),
    [("*/5  *  * * *", "*/5 * * * *"), ("0 0 9 * * MON", "0 0 9 * * MON"), ("@Daily", "@daily")],
)
def test_check_cron_accepts(text: str, normalised: str) -> None:
    assert check_cron(text) == normalised


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("* * * *", "has 4"),
        ("* * * * * * *", "has 7"),
        ("61 * * * *", "not a valid cron"),
        ("H * * * *", "not a valid cron"),
        ("@often", "unknown cron alias"),
        ("* " * 150, "at most 200"),
    ],
)
def test_check_cron_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_cron(text)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "", "Europe/Berlin/x"])
def test_check_timezone_refuses(name: str) -> None:
    with pytest.raises(ValueError, match="IANA"):
        check_timezone(name)


# -- intervals -------------------------------------------------------------------------------


def test_every_is_anchored() -> None:
    table = Every(30, utc(2026, 1, 1, 0, 0, 7))
    assert table.next_after(utc(2025, 1, 1)) == utc(2026, 1, 1, 0, 0, 7)
    assert table.next_after(utc(2026, 1, 1, 0, 0, 7)) == utc(2026, 1, 1, 0, 0, 37)
    assert upcoming(table, utc(2026, 1, 1, 1), 2) == [
        utc(2026, 1, 1, 1, 0, 7),
        utc(2026, 1, 1, 1, 0, 37),
    ]


def test_every_ignores_dst() -> None:
    # Elapsed time: 24 h after 12:00 CET on the day before spring forward is 13:00 CEST.
    start = local(BERLIN, 2026, 3, 28, 12).astimezone(UTC)
    [tick] = upcoming(Every(86400, start), start, 1)
    assert walls([tick], BERLIN) == ["03-29 13:00:00+0200"]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), (90, 90)])
def test_parse_every(text: object, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["0s", "1.5s", "500ms", "400d", "soon", -5])
def test_parse_every_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_every(text)


def test_format_every() -> None:
    assert [format_every(s) for s in (30, 90, 300, 7200, 86400)] == ["30s", "90s", "5m", "2h", "1d"]


# -- jitter ----------------------------------------------------------------------------------


def test_jitter_is_deterministic_and_bounded() -> None:
    tick = utc(2026, 1, 1, 9)
    delays = [jitter(f"sch_{i}", tick, 30) for i in range(200)]
    assert all(timedelta(0) <= d <= timedelta(seconds=30) for d in delays)
    assert len(set(delays)) > 100  # spread out, not one value
    assert jitter("sch_1", tick, 30) == jitter("sch_1", tick, 30)
    assert jitter("sch_1", tick, 0) == timedelta(0)


# -- one pass: on time, catch-up -------------------------------------------------------------


def policy(
    catch_up: CatchUp, *, max_catch_up: int = 10, grace: float = 5.0, jitter_s: float = 0.0
) -> Policy:
    return Policy("sch_test", catch_up, max_catch_up, grace, jitter_s)


EVERY_SECOND = Every(1, utc(2026, 1, 1))


def test_on_time_fires_the_due_tick_and_moves_on() -> None:
    p = plan(
        EVERY_SECOND,
        utc(2026, 1, 1, 0, 0, 10),
        utc(2026, 1, 1, 0, 0, 10, 50_000),
        policy(CatchUp.SKIP),
    )
    assert p.ticks == [utc(2026, 1, 1, 0, 0, 10)]
    assert p.advance.next_tick_at == utc(2026, 1, 1, 0, 0, 11)
    assert p.advance.missed == 0


def test_late_within_grace_fires_every_tick() -> None:
    # Every worker stalled 3 s: the ticks are late but not missed.
    p = plan(
        EVERY_SECOND, utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 0, 13), policy(CatchUp.SKIP)
    )
    assert p.ticks == [utc(2026, 1, 1, 0, 0, s) for s in (10, 11, 12, 13)]
    assert p.advance.missed == 0


def downtime(catch_up: CatchUp, **kw: float) -> tuple[list[int], int, datetime | None]:
    """Ticks every second from 00:00:10; the scheduler wakes at 00:01:40 (90 s late)."""
    p = plan(
        EVERY_SECOND,
        utc(2026, 1, 1, 0, 0, 10),
        utc(2026, 1, 1, 0, 1, 40, 500_000),
        policy(catch_up, **kw),
    )  # type: ignore[arg-type]
    seconds = [int((t - utc(2026, 1, 1)).total_seconds()) for t in p.ticks]
    return seconds, p.advance.missed, p.advance.next_tick_at


def test_catch_up_skip_fires_only_what_is_on_time() -> None:
    seconds, missed, nxt = downtime(CatchUp.SKIP)
    assert seconds == [96, 97, 98, 99, 100]  # within the 5 s grace
    assert missed == 86  # 10 .. 95
    assert nxt == utc(2026, 1, 1, 0, 1, 41)


def test_catch_up_one_fires_one_run_for_the_missed() -> None:
    seconds, missed, _ = downtime(CatchUp.ONE)
    assert seconds == [95, 96, 97, 98, 99, 100]
    assert missed == 85


def test_catch_up_all_fires_the_latest_up_to_the_limit() -> None:
    seconds, missed, _ = downtime(CatchUp.ALL, max_catch_up=7)
    assert seconds == [89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100]
    assert missed == 79


def test_catch_up_all_within_the_limit_fires_every_missed_tick() -> None:
    seconds, missed, _ = downtime(CatchUp.ALL, max_catch_up=1000)
    assert seconds == list(range(10, 101))
    assert missed == 0


def test_catch_up_after_a_long_downtime_is_bounded() -> None:
    # A year down with a per-second cron: the pass does not walk 31 million ticks.
    table = Cron("* * * * * *", "UTC")
    p = plan(table, utc(2025, 1, 1), utc(2026, 1, 1), policy(CatchUp.ALL, max_catch_up=3))
    assert p.ticks[:3] == [
        utc(2025, 12, 31, 23, 59, 52),
        utc(2025, 12, 31, 23, 59, 53),
        utc(2025, 12, 31, 23, 59, 54),
    ]
    assert p.advance.missed == 10_000 - 3  # counted up to the cap, less those fired


def test_catch_up_one_with_a_daily_cron() -> None:
    table = Cron("0 9 * * *", "UTC")
    p = plan(table, utc(2026, 1, 1, 9), utc(2026, 1, 5, 12), policy(CatchUp.ONE))
    assert p.ticks == [utc(2026, 1, 5, 9)]  # the latest missed day
    assert p.advance.missed == 4
    assert p.advance.next_tick_at == utc(2026, 1, 6, 9)


def test_jitter_delays_when_a_tick_is_due() -> None:
    pol = policy(CatchUp.SKIP, jitter_s=30)
    tick = utc(2026, 1, 1, 9)
    delay = jitter("sch_test", tick, 30)
    table = Cron("0 9 * * *", "UTC")
    before = plan(table, tick, tick + delay - timedelta(milliseconds=1), pol)
    assert before.ticks == [] and before.advance.next_tick_at == tick
    assert before.advance.next_fire_at == tick + delay
    at = plan(table, tick, tick + delay, pol)
    assert at.ticks == [tick]


def test_last_before() -> None:
    table = Cron("0 9 * * *", "UTC")
    assert last_before(table, utc(2026, 1, 5, 9), utc(2026, 1, 1)) == utc(2026, 1, 4, 9)
    assert last_before(table, utc(2026, 1, 5, 9), utc(2026, 1, 4, 10)) is None
