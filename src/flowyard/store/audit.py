"""Request-scoped audit entries, written in the same transaction as the change.

The API (or a CLI command) opens an :func:`audit_scope` around a state-changing request; the
first write transaction of the store that runs inside it inserts the entry before it commits
(:meth:`SqlBase._tx`), so the change and its audit row commit or roll back together. An entry
still unwritten when the scope ends (a refused or failed request, which changed nothing) is
written on its own by whoever opened the scope. The scope lives in a ``ContextVar``: each
request (asyncio task) sees only its own entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from flowyard.domain.auth import AuditEntry

_CURRENT: ContextVar[AuditEntry | None] = ContextVar("flowyard_audit", default=None)


@contextlib.contextmanager
def audit_scope(entry: AuditEntry) -> Iterator[AuditEntry]:
    """Make ``entry`` the pending audit entry of this context until the block ends."""
    token = _CURRENT.set(entry)
    try:
        yield entry
    finally:
        _CURRENT.reset(token)


def pending_audit() -> AuditEntry | None:
    """The entry of this context that is not written yet (None without one)."""
    entry = _CURRENT.get()
    return entry if entry is not None and not entry.written else None


def note_target(target_type: str, target_id: str) -> None:
    """Tell the pending entry what a create made (its id is known only in the store)."""
    entry = _CURRENT.get()
    if entry is not None:
        entry.target_type = target_type
        entry.target_id = target_id


def audit_row(entry: AuditEntry, at: Any) -> dict[str, Any]:
    """The ``audit_log`` row of an entry."""
    return {
        "at": at,
        "actor": entry.actor[:200],
        "action": entry.action[:100],
        "target_type": entry.target_type,
        "target_id": entry.target_id[:200] if entry.target_id else None,
        "source_ip": entry.source_ip[:64] if entry.source_ip else None,
        "outcome": entry.outcome,
        "detail": entry.detail,
    }
