"""Event triggers: resources that start a run of a workflow when another run ends or when a
named event is posted, and the debounce and throttle controls that hooks share with them
(decision 0029).

An event trigger is configuration like a hook (decision 0025), not part of a versioned
definition: it names its target workflow (whose **latest** version starts) and its source
(``on``): a workflow whose runs end, or an event name.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from flowyard.domain.statuses import TERMINAL_RUN_STATUSES, RunStatus

#: ``et_`` and 22 URL-safe base64 characters: 128 random bits (not a secret: a handle).
TRIGGER_ID_PATTERN = r"^et_[A-Za-z0-9_-]{22}$"
#: An event name: one URL segment (``POST /events/{name}``).
EVENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
_EVENT_NAME = re.compile(EVENT_NAME_PATTERN)
#: An event id (``Idempotency-Key`` or ``event_id``): printable, bounded.
EVENT_ID_MAX = 200
#: The longest debounce or throttle period: a day. Longer bursts are schedules.
MAX_PERIOD_S = 24 * 3600.0
#: Most starts a throttle lets through per period.
MAX_THROTTLE_LIMIT = 100_000
#: What the debounce and throttle rows of a hook and of an event trigger are keyed by
#: (``source``): deleting the owner deletes its rows; the pruner deletes any it left.
HOOK_SOURCE = "hk:"
TRIGGER_SOURCE = "et:"


def hook_source(hook_id: str) -> str:
    """The ``source`` of a hook's debounce and throttle rows."""
    return HOOK_SOURCE + hook_id


def trigger_source(trigger_id: str) -> str:
    """The ``source`` of an event trigger's debounce and throttle rows."""
    return TRIGGER_SOURCE + trigger_id


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

INPUT_HELP = (
    "The run input: a JSON value whose strings may be templates over the trigger's scope "
    "(`run` for run-end triggers, `event` for named events); default: the ended run's "
    "output, or the event's payload."
)


def new_trigger_id() -> str:
    """A fresh event trigger id."""
    return "et_" + secrets.token_urlsafe(16)


def is_event_name(value: str) -> bool:
    """Whether ``value`` can name an event."""
    return bool(_EVENT_NAME.match(value))


def parse_duration(value: Any) -> Any:
    """``"30s"``, ``"1m"``, ``"250ms"``, ``"2h"``, ``"1d"`` or a number of seconds -> seconds
    (anything else is left for the field's own validation to refuse)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration: write e.g. '30s', '1m', '2h'")
        return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    return value


#: A period in seconds, also written ``"30s"`` / ``"1m"``.
Period = Annotated[float, BeforeValidator(parse_duration), Field(ge=0.05, le=MAX_PERIOD_S)]
#: A template (or a constant) naming the key events are grouped by.
KeyTemplate = Annotated[str, Field(max_length=1000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Debounce(_Model):
    """A burst of events with the same key starts one run, ``period`` after the last one,
    with the latest input."""

    key: KeyTemplate = Field(
        "", description="A template over the trigger's scope and `input`; '' groups all."
    )
    period: Period = Field(description="Quiet time after the last event, e.g. '30s'.")


class Throttle(_Model):
    """At most ``limit`` starts per key per period (a fixed window aligned to the period);
    events beyond are dropped and counted."""

    key: KeyTemplate = Field(
        "", description="A template over the trigger's scope and `input`; '' counts all."
    )
    limit: int = Field(ge=1, le=MAX_THROTTLE_LIMIT)
    period: Period = Field(description="The window, e.g. '1m'.")


class Controls(_Model):
    """Debounce or throttle (not both: a debounced burst is already one start)."""

    debounce: Debounce | None = None
    throttle: Throttle | None = None

    @model_validator(mode="after")
    def _one(self) -> Controls:
        if self.debounce is not None and self.throttle is not None:
            raise ValueError("give debounce or throttle, not both")
        return self


class OnRun(_Model):
    """Runs of ``workflow`` (id or name) that end in one of ``statuses``."""

    workflow: Annotated[str, Field(min_length=1, max_length=200)]
    statuses: list[RunStatus] = Field(
        default_factory=lambda: [RunStatus.SUCCEEDED, RunStatus.FAILED], min_length=1
    )

    @model_validator(mode="after")
    def _terminal(self) -> OnRun:
        if any(s not in TERMINAL_RUN_STATUSES for s in self.statuses):
            raise ValueError("statuses are ended ones: succeeded, failed, cancelled, timed_out")
        return self


class On(_Model):
    """What fires the trigger: a run's end, or a named event."""

    run: OnRun | None = None
    event: Annotated[str, Field(pattern=EVENT_NAME_PATTERN)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> On:
        if (self.run is None) == (self.event is None):
            raise ValueError("give exactly one of run and event")
        return self


class TriggerKind(StrEnum):
    """What an event trigger listens to (a column: the dispatcher and the intake select by
    it)."""

    RUN = "run"
    EVENT = "event"


class TriggerConfig(Controls):
    """What an event trigger does, beyond its identity, source and target: stored as JSON."""

    filter: Annotated[str, Field(min_length=1, max_length=2000)] | None = Field(
        None,
        description="A condition over the scope (`run.status == 'failed'`, "
        "`event.payload.total > 100`); false: the trigger does not fire.",
    )
    input: Any = Field(None, description=INPUT_HELP)
    #: run-end triggers: the statuses that fire it (from ``on.run.statuses``).
    statuses: list[RunStatus] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EventTriggerRecord:
    """A stored event trigger. ``since_event_id``: a run-end trigger fires for runs that
    ended after it was made (events with larger ids)."""

    id: str
    name: str
    kind: TriggerKind
    workflow_id: str
    workflow_name: str
    source_workflow_id: str | None
    source_workflow_name: str | None
    event: str | None
    enabled: bool
    config: TriggerConfig
    since_event_id: int
    created_at: datetime
    updated_at: datetime
    created_by: str | None


@dataclass(frozen=True, slots=True)
class NewEventTrigger:
    """An event trigger to create (the store gives it its id and ``since_event_id``)."""

    name: str
    kind: TriggerKind
    workflow_id: str
    source_workflow_id: str | None
    event: str | None
    enabled: bool
    config: TriggerConfig
    created_by: str | None


@dataclass(frozen=True, slots=True)
class EventTriggerChange:
    """Enable, disable or reconfigure (None leaves a field as it is)."""

    enabled: bool | None = None
    config: TriggerConfig | None = None


@dataclass(frozen=True, slots=True)
class EndedRun:
    """A run's end, read from the event feed: the event's id orders and de-duplicates."""

    event_id: int
    run_id: str
    workflow_id: str
    status: RunStatus
    input: Any
    output: Any
    error: Any
    correlation_key: str | None


@dataclass(frozen=True, slots=True)
class PendingStart:
    """A debounced start: the latest input of a burst, due at ``fire_at``. ``burst`` grows
    each time an event arrives while the start is being made, so that start and the next
    one have different idempotency keys; ``version`` counts events."""

    id: int
    source: str
    key: str
    workflow_id: str
    input: Any
    actor: str | None
    fire_at: datetime
    burst: int
    version: int


@dataclass(frozen=True, slots=True)
class ThrottleVerdict:
    """Whether a throttled start may go, and when the window frees (seconds from now)."""

    allowed: bool
    retry_after_s: float
    dropped: int
