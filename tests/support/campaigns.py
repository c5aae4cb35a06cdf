"""The workflows the campaign tests start campaigns of."""

from __future__ import annotations

from typing import Any

MAILER: dict[str, Any] = {
    "name": "mailer",
    "input_schema": {
        "type": "object",
        "required": ["email"],
        "properties": {"email": {"type": "string", "minLength": 3}},
    },
    "start": "greet",
    "nodes": [
        {"id": "greet", "type": "set", "config": {"values": {"seen": True}}, "next": "done"},
        {"id": "done", "type": "end", "config": {"output": "{{ input.email }}"}},
    ],
}
WAITER: dict[str, Any] = {
    "name": "waiter",
    "start": "wait",
    "nodes": [{"id": "wait", "type": "wait_for_signal", "config": {"signal": "reply"}}],
}
