"""Durations as people write them: ``90``, ``"30s"``, ``"24h"``, ``"1h30m"``, ``"2d"``,
ISO 8601 ``"PT24H"`` / ``"P2DT3H"``; and timestamps as ISO 8601 text."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_COMPACT = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_ISO = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
#: A duration longer than this is a mistake, not a plan.
MAX_DURATION_S = 366 * 86400 * 10


def parse_duration(value: object) -> float:
    """Seconds in ``value``; ValueError with the reason when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise ValueError(f"{value!r} is not a duration")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"duration {value!r} is longer than 10 years")
    return seconds


def _parse_text(text: str) -> float:
    if not text:
        raise ValueError("empty duration")
    try:
        return float(text)
    except ValueError:
        pass
    iso = _ISO.match(text)
    if iso and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
        parts = {k: float(v) for k, v in iso.groupdict().items() if v is not None}
        return sum(parts.get(k, 0.0) * _UNITS[k.lower()] for k in ("w", "d", "h", "m", "s"))
    pos, total = 0, 0.0
    for match in _COMPACT.finditer(text):
        if text[pos : match.start()].strip():
            break
        total += float(match.group(1)) * _UNITS[match.group(2).lower()]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(
            f"{text!r} is not a duration (examples: 30s, 15m, 24h, 1h30m, 2d, PT24H, P1DT2H)"
        )
    return total


def parse_timestamp(value: object) -> datetime:
    """An aware UTC datetime from ISO 8601 text (``Z`` allowed; naive means UTC) or a
    datetime."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from None
    else:
        raise ValueError(f"{value!r} is not a timestamp")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def after(now: datetime, seconds: float) -> datetime:
    """``now`` plus ``seconds``."""
    return now + timedelta(seconds=seconds)
