"""Identifier types and generation.

Ids are time-ordered (a microsecond timestamp followed by random bits, ULID-like) so that new
rows land at the end of B-tree indexes and ids sort by creation time, also within a bulk start
that creates thousands in one millisecond.
"""

from __future__ import annotations

import os
import time
from typing import NewType

WorkflowId = NewType("WorkflowId", str)
RunId = NewType("RunId", str)
StepId = NewType("StepId", int)
EventId = NewType("EventId", int)
WorkerId = NewType("WorkerId", str)

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_ulid() -> str:
    """Return a 26-character, time-ordered (to the microsecond), random identifier:
    55 bits of microseconds since the epoch, then 75 random bits."""
    micros = time.time_ns() // 1_000
    rand = int.from_bytes(os.urandom(10), "big") >> 5
    return _encode(micros, 11) + _encode(rand, 15)


def new_workflow_id() -> WorkflowId:
    """Return a fresh workflow id (``wf_`` prefix)."""
    return WorkflowId("wf_" + new_ulid())


def new_run_id() -> RunId:
    """Return a fresh run id (``run_`` prefix)."""
    return RunId("run_" + new_ulid())


def new_worker_id(hint: str = "") -> WorkerId:
    """Return a fresh worker id, optionally prefixed with a readable hint (host:pid)."""
    suffix = new_ulid()[-8:]
    return WorkerId(f"{hint}-{suffix}" if hint else suffix)
