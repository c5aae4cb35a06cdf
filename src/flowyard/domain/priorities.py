"""Priorities and lanes: the order in which the claim takes due steps (decision 0032).

A step carries its run's ``priority`` (higher first) and ``lane``: the campaign its run
belongs to (directly, or as the child of one of its runs), ``""`` outside campaigns. The
claim takes the highest priority that has due steps; within one priority, lanes share the
workers by their weights (:mod:`flowyard.engine.fairness`).
"""

from __future__ import annotations

#: The range of priorities (a few levels: the claim probes each lane it finds).
MIN_PRIORITY = 0
MAX_PRIORITY = 9
#: Runs started one at a time (API, webhooks, schedules, event triggers) and what a
#: state-machine action or a signal wakes: someone is waiting for them.
INTERACTIVE = 6
#: A campaign's runs unless the campaign says otherwise: nobody waits for one of them.
BULK = 3
#: The lane of runs outside campaigns.
NO_LANE = ""
#: A campaign's share of the workers among the campaigns of its priority.
DEFAULT_WEIGHT = 1
MAX_WEIGHT = 1000


def check_priority(value: object) -> int:
    """``value`` when it is an integer priority in range; ValueError with the range else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(f"priority must be from {MIN_PRIORITY} to {MAX_PRIORITY}, not {value}")
    return value


def check_weight(value: object) -> int:
    """``value`` when it is an integer weight in range; ValueError with the range else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"weight must be an integer from 1 to {MAX_WEIGHT}")
    if not 1 <= value <= MAX_WEIGHT:
        raise ValueError(f"weight must be from 1 to {MAX_WEIGHT}, not {value}")
    return value
