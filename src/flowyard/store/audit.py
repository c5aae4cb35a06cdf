"""Audit entries written in the same transaction as the change they describe.

Whoever asks for an audited change (an API request, a CLI command) builds an
:class:`~flowyard.domain.auth.AuditEntry` and passes it to the store's write method
(``audit=entry``); that method's transaction inserts the entry before it commits
(:meth:`SqlBase._tx`), so the change and its audit row commit or roll back together, and the
entry is marked ``written``. An entry still unwritten when the request ends (a refused or
failed request, which changed nothing) is written on its own by whoever built it
(``append_audit``). Writes without an entry (workers, bookkeeping) audit nothing and read no
request state.
"""

from __future__ import annotations

from typing import Any

from flowyard.domain.auth import AuditEntry


def note_target(entry: AuditEntry | None, target_type: str, target_id: str | None) -> None:
    """Tell ``entry`` what the change is about (a create's id is known only in the store)."""
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
