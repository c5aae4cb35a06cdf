"""Definitions shared by several suites."""

from __future__ import annotations

from typing import Any

#: One definition with five different mistakes, in five different nodes (validation, API and
#: CLI suites all check that every one is reported at once).
FIVE_MISTAKES: dict[str, Any] = {
    "name": "five-mistakes",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "route"},
        {
            "id": "route",
            "type": "condition",
            "config": {"cases": [{"when": "input.region ==", "next": "east"}], "default": "west"},
        },
        {"id": "east", "type": "http", "config": {"method": "POST"}, "next": "notify"},
        {"id": "west", "type": "crm.magic", "next": "done"},
        {"id": "notify", "type": "log", "config": {"message": "hi"}, "next": "nowhere"},
        {"id": "done", "type": "end"},
        {"id": "orphan", "type": "end"},
    ],
}
#: Where each mistake is reported, and its code.
FIVE_PROBLEMS = [
    ("/nodes/1/config/cases/0/when", "expression"),
    ("/nodes/2/config/url", "missing"),
    ("/nodes/3/type", "unknown_type"),
    ("/nodes/4/next", "dangling_edge"),
    ("/nodes/6", "unreachable"),
]
FIVE_POINTERS = [pointer for pointer, _ in FIVE_PROBLEMS]
