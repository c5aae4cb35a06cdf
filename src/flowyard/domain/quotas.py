"""Provider quotas: a rate shared by every worker, kept as a token bucket in the database.

A quota is keyed ``credential:<name>`` (every step that sends that credential) or
``node_type:<type>`` (every step of that node type). ``"100 per 20s"`` promises the
provider that no window of 20 seconds ever sees more than 100 steps of the key start, and
``concurrency: 5`` that no more than 5 steps of the key are in flight at once:

- the bucket holds at most ``burst`` tokens (default 1: requests spaced evenly);
- it refills at ``(tokens - burst + 1) / per_s`` tokens a second.

A bucket of ``burst`` tokens refilled at that rate grants at most
``burst + (tokens - burst + 1) - 1 = tokens`` in any half-open window of ``per_s`` seconds
(the token that would make ``tokens + 1`` arrives exactly when the window ends). The
classic bucket (capacity ``tokens``, refilled at ``tokens / per_s``) lets ``2 * tokens``
through in one window: a full bucket at its start, then a window's refill; a provider
counting its window sees twice its limit (decision 0021).

A concurrency limit is counted in *slots*: a step that starts holds one for as long as its
claim lasts (the store counts only slots whose step is still running under the same claim
with a live lease, so a killed worker leaks none: decision 0023). A step that finds every
slot taken comes back at a queue slot spaced by the observed hold time (:func:`admit`).

The math here is pure: the store locks the rows, asks :func:`decide`, writes the answer
(``store/quotas.py``).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from flowyard.domain.durations import parse_duration

#: Key prefixes: what a quota applies to.
CREDENTIAL_PREFIX = "credential:"
NODE_TYPE_PREFIX = "node_type:"
#: A campaign's limits (decision 0032): ``campaign:<id>`` for the whole campaign and
#: ``campaign:<id>:<digest>`` for the runs of one concurrency key (its digest: any text).
CAMPAIGN_PREFIX = "campaign:"
_KEY = re.compile(
    r"^(credential:[a-z][a-z0-9_.-]{0,62}|node_type:[a-z][a-z0-9_.-]{0,62}"
    r"|campaign:cmp_[0-9a-z]{26}(:[0-9a-f]{16})?)$"
)
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
MAX_CONCURRENCY = 100_000
#: A new concurrency limit assumes a step holds its slot this long, until steps are seen.
DEFAULT_HOLD_S = 1.0
#: Hold times outside this range are clamped (a step stuck for an hour says little about
#: when the next slot frees; retry intervals stay within reason).
MIN_HOLD_S, MAX_HOLD_S = 0.01, 300.0
#: Weight of each new hold time in the moving average.
HOLD_WEIGHT = 0.2
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


def campaign_key(campaign_id: str) -> str:
    """The quota key of a whole campaign's limits."""
    return CAMPAIGN_PREFIX + campaign_id


def campaign_item_key(campaign_id: str, concurrency_key: str) -> str:
    """The quota key of the runs of ``campaign_id`` whose concurrency key is
    ``concurrency_key`` (a digest: keys are any text, quota keys are short and plain)."""
    digest = hashlib.sha256(concurrency_key.encode()).hexdigest()[:16]
    return f"{CAMPAIGN_PREFIX}{campaign_id}:{digest}"


def is_campaign_item_key(key: str) -> bool:
    """A per-key quota of a campaign: its row is made with the campaign's runs."""
    return key.startswith(CAMPAIGN_PREFIX) and ":" in key[len(CAMPAIGN_PREFIX) :]


def check_key(key: str) -> str:
    """``key`` when it is ``credential:<name>``, ``node_type:<type>`` or a campaign's
    (``campaign:<id>``, ``campaign:<id>:<digest>``); ValueError else."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(
            f"{key!r} is not a quota key: use credential:<name> or node_type:<type> "
            "(lower-case letters, digits, '_', '.', '-'), or campaign:<campaign id>"
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
    Quota("node_type:x", tokens, per_s)  # the bounds, checked once
    return tokens, per_s


def rate_text(tokens: int, per_s: float) -> str:
    """A rate as written back (``"100 per 20s"``): :func:`parse_rate` reads it again."""
    return f"{tokens} per {per_s:g}s"


@dataclass(frozen=True, slots=True)
class Quota:
    """For ``key``: at most ``tokens`` starts per ``per_s`` seconds, ``burst`` at once (a
    rate; both None: no rate), and at most ``concurrency`` steps in flight (None: no
    limit). A quota has a rate, a concurrency limit, or both."""

    key: str
    tokens: int | None
    per_s: float | None
    burst: int = 1
    enabled: bool = True
    concurrency: int | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        if (self.tokens is None) != (self.per_s is None):
            raise ValueError("a rate needs both its count and its window")
        if self.tokens is None and self.concurrency is None:
            raise ValueError("a quota needs a rate, a concurrency limit, or both")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int):
            raise ValueError("burst must be an integer")
        if self.tokens is not None and self.per_s is not None:
            self._check_rate(self.tokens, self.per_s)
        elif self.burst != 1:
            raise ValueError("burst applies to a rate: set a rate, or leave burst out")
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or not 1 <= self.concurrency <= MAX_CONCURRENCY
        ):
            raise ValueError(f"concurrency must be an integer between 1 and {MAX_CONCURRENCY}")

    def _check_rate(self, tokens: int, per_s: float) -> None:
        if isinstance(tokens, bool) or not isinstance(tokens, int):
            raise ValueError("tokens must be an integer")
        if not 1 <= tokens <= MAX_TOKENS:
            raise ValueError(f"tokens must be between 1 and {MAX_TOKENS}")
        if not (math.isfinite(per_s) and MIN_WINDOW_S <= per_s <= MAX_WINDOW_S):
            raise ValueError(f"the window must be between {MIN_WINDOW_S} s and 7 days")
        if not 1 <= self.burst <= tokens:
            raise ValueError(f"burst must be between 1 and the rate's tokens ({tokens})")

    @property
    def has_rate(self) -> bool:
        """The quota paces starts (it may only limit concurrency)."""
        return self.tokens is not None

    @property
    def refill_per_s(self) -> float:
        """Tokens added per second: what keeps every window at ``tokens`` or fewer (0
        without a rate)."""
        if self.tokens is None or self.per_s is None:
            return 0.0
        return (self.tokens - self.burst + 1) / self.per_s

    @property
    def rate(self) -> str | None:
        """The rate as written back (``"100 per 20s"``); None without one."""
        if self.tokens is None or self.per_s is None:
            return None
        return rate_text(self.tokens, self.per_s)


@dataclass(frozen=True, slots=True)
class Bucket:
    """The shared state of a quota: tokens available at ``updated_at``, a pause a provider
    asked for (nothing is granted before ``paused_until``), and ``queue_until``: the end of
    the retry times handed to refused steps (see :func:`take`)."""

    available: float
    updated_at: datetime
    paused_until: datetime | None = None
    queue_until: datetime | None = None


class SlotHolder(NamedTuple):
    """Who holds a concurrency slot: a step, under one claim (``claims`` as the claim left
    it; a later claim of the same step is another holder)."""

    step_id: int
    claims: int


@dataclass(frozen=True, slots=True)
class Slots:
    """The shared state of a concurrency limit: ``in_flight`` steps hold a slot now; a step
    holds one for ``hold_s`` on average (a moving average of the steps seen); refused steps
    were told to come back until ``queue_until``."""

    in_flight: int = 0
    hold_s: float = DEFAULT_HOLD_S
    queue_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class QuotaState:
    """A quota, its bucket and its slots, as the API shows them."""

    quota: Quota
    bucket: Bucket
    created_at: datetime
    slots: Slots = Slots()

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
    if not quota.enabled or not quota.has_rate:
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


def admit(slots: Slots, quota: Quota, now: datetime) -> tuple[Slots, datetime | None]:
    """A slot of ``quota``'s concurrency limit: ``(slots with it, None)``, or ``(slots to
    write, when to come back)`` when all are held.

    A refused step cannot know when a slot frees (that is when another step ends), so it is
    told a *queue slot*: one average hold time divided by the limit after the last one
    handed out (about when the next slot frees if the steps holding them end in turn). The
    claims a backlog costs are then about one per slot freed, not one per poll per step.
    A queue slot reserves nothing: a step that comes when a slot is free takes it, and a
    grant that leaves slots free voids the queue (nobody waits for them)."""
    if not quota.enabled or quota.concurrency is None:
        return slots, None
    if slots.in_flight < quota.concurrency:
        spare = slots.in_flight + 1 < quota.concurrency
        return replace(
            slots, in_flight=slots.in_flight + 1, queue_until=None if spare else slots.queue_until
        ), None
    interval = slots.hold_s / quota.concurrency
    slot = _after(now, interval)
    if slots.queue_until is not None and slots.queue_until > slot:
        slot = slots.queue_until
    return replace(slots, queue_until=_after(slot, interval)), slot


def observe_hold(hold_s: float, samples: list[float]) -> float:
    """The moving average of the hold time after ``samples`` (seconds, each clamped)."""
    for sample in samples:
        clamped = min(MAX_HOLD_S, max(MIN_HOLD_S, sample))
        hold_s += HOLD_WEIGHT * (clamped - hold_s)
    return min(MAX_HOLD_S, max(MIN_HOLD_S, hold_s))


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` answered: ``retry_at`` None when every quota granted (then
    ``buckets`` and ``slots`` hold what was taken), else the earliest moment all of them may
    grant (then they hold only the refused quotas' moved queues: nothing was taken)."""

    buckets: dict[str, Bucket]
    slots: dict[str, Slots]
    retry_at: datetime | None

    @property
    def granted(self) -> bool:
        """Every quota granted."""
        return self.retry_at is None


def decide(entries: dict[str, tuple[Quota, Bucket, Slots]], now: datetime) -> Decision:
    """All-or-nothing over several quotas, each a rate (a token) and/or a concurrency limit
    (a slot): a step starts only when every one of its quotas lets it."""
    granted: tuple[dict[str, Bucket], dict[str, Slots]] = ({}, {})
    refused: tuple[dict[str, Bucket], dict[str, Slots]] = ({}, {})
    retry_at: datetime | None = None
    for key, (quota, bucket, slots) in entries.items():
        result = take(bucket, quota, now)
        if result.granted:
            granted[0][key] = result.bucket
        else:
            refused[0][key] = result.bucket
            assert result.retry_at is not None
            retry_at = result.retry_at if retry_at is None else max(retry_at, result.retry_at)
        admitted, come_back = admit(slots, quota, now)
        if come_back is None:
            granted[1][key] = admitted
        else:
            refused[1][key] = admitted
            retry_at = come_back if retry_at is None else max(retry_at, come_back)
    if retry_at is not None:
        return Decision(*refused, retry_at)
    return Decision(*granted, None)


def take_all(
    buckets: dict[str, tuple[Quota, Bucket]], now: datetime
) -> tuple[dict[str, Bucket], datetime | None]:
    """:func:`decide` over rates only: ``(buckets to write, None)`` when every one grants;
    else ``(buckets to write, when)``: nothing taken (only the refused buckets' queues
    move), ``when`` the latest of the refused ones' slots."""
    decision = decide({k: (q, b, Slots()) for k, (q, b) in buckets.items()}, now)
    return decision.buckets, decision.retry_at


def slowed(bucket: Bucket, until: datetime) -> Bucket:
    """A provider said "too many": nothing until ``until`` (a later pause already set is
    kept), and the bucket is empty then, so the workers start again one token at a time."""
    paused = until if bucket.paused_until is None else max(bucket.paused_until, until)
    return Bucket(0.0, max(bucket.updated_at, paused), paused, bucket.queue_until)


def rate_limited(error_type: str, details: dict[str, object]) -> bool:
    """An error that means the provider refused for the rate: a ``retry_after_s``, a
    ``rate_limited: true`` (set by a node that knows its provider's rate-limit answers, e.g.
    Graph's codes 4/17/32/613, which no type suffix could name), or a type ending in
    ``.429``, ``.request_limit_exceeded``, ``.ratelimited`` or ``.20429``."""
    if isinstance(details.get("retry_after_s"), int | float) or details.get("rate_limited") is True:
        return True
    return error_type.lower().endswith(RATE_LIMITED_SUFFIXES)
