"""Event triggers' pure parts: the scopes their filters and templates see, the keys that
group events (debounce, throttle) and the idempotency keys that make each start happen
once however many dispatchers read the same event."""

from __future__ import annotations

import hashlib
from typing import Any

from flowyard.domain.triggers import EndedRun, PendingStart

#: The dispatcher's cursor over ``run_events`` (``trigger_cursors.name``).
RUN_END_CURSOR = "run_end"


def digest(value: str) -> str:
    """SHA-256 hex of ``value``: keys and event ids are stored and compared as digests
    (bounded length, nothing a client sent is echoed into another row's key)."""
    return hashlib.sha256(value.encode()).hexdigest()


def run_scope(ended: EndedRun, workflow_name: str | None) -> dict[str, Any]:
    """What a run-end trigger's filter and templates see: ``run``."""
    return {
        "run": {
            "id": ended.run_id,
            "workflow": workflow_name,
            "workflow_id": ended.workflow_id,
            "status": ended.status.value,
            "input": ended.input,
            "output": ended.output,
            "error": ended.error,
            "correlation_key": ended.correlation_key,
        }
    }


def event_scope(name: str, event_id: str | None, payload: Any) -> dict[str, Any]:
    """What a named event's filter and templates see: ``event``."""
    return {"event": {"name": name, "id": event_id, "payload": payload}}


def run_end_key(trigger_id: str, ended: EndedRun) -> str:
    """The target run's idempotency key for one run end: two dispatchers reading the same
    event start one run. The event id (not the run id) names it, so a run retried after it
    failed and then succeeding fires its ``succeeded`` triggers too."""
    return f"et:{trigger_id}:run-event:{ended.event_id}"


def event_key(trigger_id: str, event_id: str) -> str:
    """The target run's idempotency key for a posted event with an id."""
    return f"et:{trigger_id}:event:{digest(event_id)}"


def debounce_key(pending: PendingStart) -> str:
    """The run's idempotency key of one burst: a loop that claims a start another loop died
    making starts it once."""
    return f"db:{pending.source}:{pending.key[:32]}:{pending.id}:{pending.burst}"


def key_text(value: Any) -> str:
    """A rendered key template as text (None and '' group everything together)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)
