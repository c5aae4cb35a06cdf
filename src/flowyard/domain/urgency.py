"""Who waits for a transaction: a client (an API request) or nobody in particular (a worker).

``flowyard serve`` on SQLite runs its workers in the API's process, on the one connection
that may write: behind a backlog a request's write queued behind the workers' claims and
commits. The API marks the work of a request urgent (a context variable, so every task the
request starts inherits it); the SQLite store hands its write connection to urgent waiters
first (decision 0041). Nothing else reads it: PostgreSQL has a pool of writers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_URGENT: ContextVar[bool] = ContextVar("flowyard_urgent", default=False)


def is_urgent() -> bool:
    """Whether the current task works for a client that waits for it."""
    return _URGENT.get()


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Mark the work done inside (and in the tasks it starts) as waited for by a client."""
    token = _URGENT.set(True)
    try:
        yield
    finally:
        _URGENT.reset(token)
