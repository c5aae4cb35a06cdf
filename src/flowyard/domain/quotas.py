"""Provider quotas: a rate shared by every worker, kept as a token bucket in the database.

A quota is keyed ``credential:<name>`` (every step that sends that credential) or
``node_type:<type>`` (every step of that node type). ``"100 per 20s"`` promises the
provider that no window of 20 seconds ever sees more than 100 steps of the key start:

- the bucket holds at most ``burst`` tokens (default 1: requests spaced evenly);
- it refills at ``(tokens - burst + 1) / per_s`` tokens a second.

A bucket of ``burst`` tokens refilled at that rate grants at most
``burst + (tokens - burst + 1) - 1 = tokens`` in any half-open window of ``per_s`` seconds
(the token that would make ``tokens + 1`` arrives exactly when the window ends). The
classic bucket (capacity ``tokens``, refilled at ``tokens / per_s``) lets ``2 * tokens``
through in one window: a full bucket at its start, then a window's refill; a provider
counting its window sees twice its limit (decision 0021).

The bucket math here is pure: the store locks the rows, asks :func:`take`, writes the
answer (``store/quotas.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from flowyard.domain.durations import parse_duration

#: Key prefixes: what a quota applies to.
CREDENTIAL_PREFIX = "credential:"
NODE_TYPE_PREFIX = "node_type:"
_KEY = re.compile(r"^(credential:[a-z][a-z0-9_.-]{0,62}|node_type:[a-z][a-z0-9_.-]{0,62})$")
_RATE = re.compile(
    r"^\s*(?P<tokens>\d+)\s*(?:per|/)\s*(?P<window>.+?)\s*$",
    re.IGNORECASE,
)
#: Words accepted as a window after ``per`` (``100 per minute``).
_WORDS = {"second": 1.0, "sec": 1.0, "minute": 60.0, "min": 60.0, "hour": 3600.0, "day": 86400.0}
#: Bounds that keep the float math exact enough and catch typos.
MAX_TOKENS = 1_000_000
MIN_WINDOW_S = 0.001
MAX_WINDOW_S = 7 * 86400.0
#: A step told to come back at a slot is claimed within a worker's poll interval (0.25 s by
#: default) of it; a full bucket nobody came for in this long means its queue is void.
QUEUE_GRACE_S = 5.0
#: Float rounding of the refill: a token this close to whole is whole.
_EPSILON = 1e-9
#: Error types (suffixes) that mean "the provider says: too many requests".
RATE_LIMITED_SUFFIXES = (".429", ".request_limit_exceeded", ".ratelimited", ".20429")


def credential_key(name: str) -> str:
    """The quota key of a credential."""
    return CREDENTIAL_PREFIX + name


def node_type_key(type_name: str) -> str:
    """The quota key of a node type."""
    return NODE_TYPE_PREFIX + type_name


def check_key(key: str) -> str:
    """``key`` when it is ``credential:<name>`` or ``node_type:<type>``; ValueError else."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(
            f"{key!r} is not a quota key: use credential:<name> or node_type:<type> "
            "(lower-case letters, digits, '_', '.', '-')"
        )
    return key


def parse_rate(text: str) -> tuple[int, float]:
    """``(tokens, per_s)`` of ``"100 per 20s"``, ``"5/s"``, ``"300 per minute"``,
    ``"10 per 1h30m"``; ValueError with the reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a rate")
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate (examples: 100 per 20s, 5/s, 300 per minute)")
    tokens = int(match.group("tokens"))
    window = match.group("window").strip().lower()
    if window in _WORDS or window.rstrip("s") in _WORDS:
        per_s = _WORDS.get(window, _WORDS.get(window.rstrip("s"), 1.0))
    elif window in ("s", "m", "h", "d"):
        per_s = parse_duration("1" + window)
    else:
        per_s = parse_duration(window)
    quota = Quota("node_type:x", tokens, per_s)  # the bounds, checked once
    return quota.tokens, quota.per_s


@dataclass(frozen=True, slots=True)
class Quota:
    """``tokens`` per ``per_s`` seconds for ``key``, at most ``burst`` at once."""

    key: str
    tokens: int
    per_s: float
    burst: int = 1
    enabled: bool = True

    def __post_init__(self) -> None:
        check_key(self.key)
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int):
            raise ValueError("tokens must be an integer")
        if not 1 <= self.tokens <= MAX_TOKENS:
            raise ValueError(f"tokens must be between 1 and {MAX_TOKENS}")
        if not (math.isfinite(self.per_s) and MIN_WINDOW_S <= self.per_s <= MAX_WINDOW_S):
            raise ValueError(f"the window must be between {MIN_WINDOW_S} s and 7 days")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int):
            raise ValueError("burst must be an integer")
        if not 1 <= self.burst <= self.tokens:
            raise ValueError(f"burst must be between 1 and the rate's tokens ({self.tokens})")

    @property
    def refill_per_s(self) -> float:
        """Tokens added per second: what keeps every window at ``tokens`` or fewer."""
        return (self.tokens - self.burst + 1) / self.per_s

    @property
    def rate(self) -> str:
        """The rate as written back (``"100 per 20s"``)."""
        return f"{self.tokens} per {self.per_s:g}s"


@dataclass(frozen=True, slots=True)
class Bucket:
    """The shared state of a quota: tokens available at ``updated_at``, a pause a provider
    asked for (nothing is granted before ``paused_until``), and ``queue_until``: the end of
    the retry times handed to refused steps (see :func:`take`)."""

    available: float
    updated_at: datetime
    paused_until: datetime | None = None
    queue_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class QuotaState:
    """A quota and its bucket, as the API shows it."""

    quota: Quota
    bucket: Bucket
    created_at: datetime

    def available_at(self, now: datetime) -> float:
        """Tokens available at ``now`` (0 while paused)."""
        return refill(self.bucket, self.quota, now).available


@dataclass(frozen=True, slots=True)
class Take:
    """What :func:`take` decided: granted, or not before ``retry_at``; ``bucket`` is the
    state to write either way (a refusal only moves ``queue_until``)."""

    granted: bool
    bucket: Bucket
    retry_at: datetime | None = None


def full(quota: Quota, now: datetime) -> Bucket:
    """The bucket of a new quota: ``burst`` tokens."""
    return Bucket(float(quota.burst), now)


def refill(bucket: Bucket, quota: Quota, now: datetime) -> Bucket:
    """``bucket`` at ``now``: refilled since ``updated_at`` (never beyond ``burst``; a clock
    that went back adds nothing); a pause that is still on keeps it as it is."""
    if bucket.paused_until is not None and now < bucket.paused_until:
        return bucket
    start = bucket.updated_at
    if bucket.paused_until is not None and bucket.paused_until > start:
        start = bucket.paused_until
    elapsed = max(0.0, (now - start).total_seconds())
    available = min(float(quota.burst), bucket.available + elapsed * quota.refill_per_s)
    return Bucket(available, max(now, bucket.updated_at), None, bucket.queue_until)


def _after(when: datetime, seconds: float) -> datetime:
    # Up to the next microsecond (what a timestamp holds): rounding down would name a moment
    # when the token is not quite there yet.
    return when + timedelta(microseconds=math.ceil(seconds * 1_000_000))


def _idle_queue(bucket: Bucket, quota: Quota, now: datetime) -> bool:
    """The bucket has been full for longer than a step takes to come back for its slot
    (:data:`QUEUE_GRACE_S`, or one token interval when that is longer): nobody queued for
    its tokens came for them (their runs were cancelled, paused, ...), so the queue is
    void."""
    start = bucket.updated_at
    if bucket.paused_until is not None and bucket.paused_until > start:
        start = bucket.paused_until
    full_at = _after(start, (quota.burst - bucket.available) / quota.refill_per_s)
    return (now - full_at).total_seconds() > max(QUEUE_GRACE_S, 1.0 / quota.refill_per_s)


def take(bucket: Bucket, quota: Quota, now: datetime) -> Take:
    """Take one token at ``now``, or say when to come back.

    A refused step gets the next free *slot*: the time the next token is there, but after
    the slots already handed out (``queue_until``), one token interval apart. Without it
    every step refused during a backlog would come back for the same next token, and a
    backlog of 50,000 would cost 50,000 claims per token. Slots reserve nothing (a token goes
    to whoever asks first once it is there), so a step that never comes back leaks nothing;
    a queue nobody came for is forgotten once a token has sat unused for an interval."""
    if not quota.enabled:
        return Take(True, bucket)
    paused = bucket.paused_until is not None and now < bucket.paused_until
    current = bucket if paused else refill(bucket, quota, now)
    if not paused and current.available >= 1.0 - _EPSILON:
        taken = replace(current, available=max(0.0, current.available - 1.0))
        if taken.queue_until is not None and (
            taken.queue_until <= now or _idle_queue(bucket, quota, now)
        ):
            taken = replace(taken, queue_until=None)
        return Take(True, taken)
    interval = 1.0 / quota.refill_per_s
    base = bucket.paused_until if paused and bucket.paused_until is not None else now
    token_at = _after(base, (1.0 - min(current.available, 1.0)) * interval)
    slot = token_at if bucket.queue_until is None else max(token_at, bucket.queue_until)
    return Take(False, replace(bucket, queue_until=_after(slot, interval)), slot)


def take_all(
    buckets: dict[str, tuple[Quota, Bucket]], now: datetime
) -> tuple[dict[str, Bucket], datetime | None]:
    """All-or-nothing over several quotas: ``(buckets to write, None)`` when every one
    grants; else ``(buckets to write, when)``: nothing taken (only the refused buckets'
    queues move), ``when`` the latest of the refused ones' slots, the earliest moment all
    of them may grant."""
    granted: dict[str, Bucket] = {}
    refused: dict[str, Bucket] = {}
    retry_at: datetime | None = None
    for key, (quota, bucket) in buckets.items():
        result = take(bucket, quota, now)
        if result.granted:
            granted[key] = result.bucket
        else:
            refused[key] = result.bucket
            assert result.retry_at is not None
            retry_at = result.retry_at if retry_at is None else max(retry_at, result.retry_at)
    if retry_at is not None:
        return refused, retry_at
    return granted, None


def slowed(bucket: Bucket, until: datetime) -> Bucket:
    """A provider said "too many": nothing until ``until`` (a later pause already set is
    kept), and the bucket is empty then, so the workers start again one token at a time."""
    paused = until if bucket.paused_until is None else max(bucket.paused_until, until)
    return Bucket(0.0, max(bucket.updated_at, paused), paused, bucket.queue_until)


def rate_limited(error_type: str, details: dict[str, object]) -> bool:
    """An error that means the provider refused for the rate: a ``retry_after_s`` or a type
    ending in ``.429``, ``.request_limit_exceeded``, ``.ratelimited`` or ``.20429``."""
    if isinstance(details.get("retry_after_s"), int | float):
        return True
    return error_type.lower().endswith(RATE_LIMITED_SUFFIXES)
