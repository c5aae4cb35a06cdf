"""Retry timing and retry eligibility (our own math, deliberately small and pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase

from flowyard.domain.definition import RetryPolicy
from flowyard.domain.errors import ErrorInfo

#: A provider's Retry-After is honoured up to this bound, so a bogus header cannot park a step
#: for a year.
MAX_RETRY_AFTER_S = 86_400.0


def matches_any(error_type: str, patterns: Iterable[str]) -> bool:
    """True if ``error_type`` matches one of the fnmatch ``patterns`` (``*`` matches all)."""
    return any(fnmatchcase(error_type, pattern) for pattern in patterns)


def may_retry(policy: RetryPolicy, error: ErrorInfo, attempt: int) -> bool:
    """Whether the attempt number ``attempt`` (1-based) that failed with ``error`` is retried."""
    if not error.transient or attempt >= policy.max_attempts:
        return False
    if matches_any(error.type, policy.non_retryable):
        return False
    return matches_any(error.type, policy.retry_on)


def backoff_delay(
    policy: RetryPolicy,
    attempt: int,
    *,
    retry_after_s: float | None = None,
    rand: Callable[[], float],
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based).

    Exponential: ``initial * rate**(attempt-1)`` capped at ``max_interval_s``; with full jitter
    a uniform draw in ``[0, that]`` (spreads a thundering herd). A provider's ``Retry-After``
    is a floor: we never come back sooner than it asked.
    """
    exponent = max(0, attempt - 1)
    # Cap the exponent first so huge attempt counts cannot overflow a float.
    base = policy.initial_interval_s * (policy.backoff_rate ** min(exponent, 64))
    delay = min(policy.max_interval_s, base)
    if policy.jitter == "full":
        delay = rand() * delay
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay
