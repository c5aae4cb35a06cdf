"""The types of a run's history entries (``run_events.type``): the one list of them.

Clients read these strings (``GET /runs/{id}/events``, the streams), so a value never
changes; a new kind of entry gets a new member. ``StrEnum`` members are the strings
themselves, so they are stored and compared as such.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """What happened to a run, one of its steps, branches or states."""

    RUN_CREATED = "run.created"
    RUN_STARTED = "run.started"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_TIMED_OUT = "run.timed_out"
    RUN_PAUSED = "run.paused"
    RUN_RESUMED = "run.resumed"
    RUN_RETRIED = "run.retried"

    STEP_STARTED = "step.started"
    STEP_SUCCEEDED = "step.succeeded"
    STEP_FAILED = "step.failed"
    STEP_RETRYING = "step.retrying"
    STEP_WAITING = "step.waiting"
    #: A step caught a failure and routed to its ``catch`` target (after ``step.failed``).
    STEP_CAUGHT = "step.caught"
    #: Run again now, not counted as an attempt (e.g. its signal was taken by another step).
    STEP_RESCHEDULED = "step.rescheduled"
    #: A provider quota had no token for it: due again when one is free, not counted as an
    #: attempt (``data``: node_id, quota keys, retry_at).
    STEP_DEFERRED = "step.deferred"
    #: Its worker let it go unfinished (a shutdown); claimable again.
    STEP_RELEASED = "step.released"
    #: Its worker's lease expired (the worker died or hung); claimable again.
    STEP_RECOVERED = "step.recovered"
    STEP_CANCELLED = "step.cancelled"

    BRANCH_FAILED = "branch.failed"
    BRANCHES_JOINED = "branches.joined"

    SIGNAL_RECEIVED = "signal.received"
    STATE_TRANSITION = "state.transition"
