"""Identifier types and generation.

Ids are time-ordered (a microsecond timestamp followed by random bits, ULID-like) so that new
rows land at the end of B-tree indexes and ids sort by creation time, also within a bulk start
that creates thousands in one millisecond.
"""

from __future__ import annotations

import base64
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


#: RFC 4648 base32 digits -> ours (same 5-bit values, another alphabet).
_FROM_RFC4648 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def _ulid(micros: int, random10: bytes) -> str:
    """``_encode(micros, 11) + _encode(random bits, 15)`` in C: the 130 bits right-aligned
    in 20 bytes are 32 base32 digits, of which the first 6 are the zero padding."""
    value = (micros << 75) | (int.from_bytes(random10, "big") >> 5)
    digits = base64.b32encode(value.to_bytes(20, "big")).translate(_FROM_RFC4648)
    return digits[6:].decode("ascii")


def new_ulid() -> str:
    """Return a 26-character, time-ordered (to the microsecond), random identifier:
    55 bits of microseconds since the epoch, then 75 random bits."""
    return _ulid(time.time_ns() // 1_000, os.urandom(10))


#: A random byte -> one digit of 5 uniformly random bits (its low 5 bits), by ``translate``.
_RANDOM_DIGIT = bytes(_ALPHABET.encode()[b & 31] for b in range(256))
#: The last two digits (10 bits) of a timestamp, by value.
_LOW_DIGITS = [_encode(v, 2) for v in range(1024)]


def new_run_ids(count: int) -> list[RunId]:
    """``count`` fresh run ids at once (a campaign's), with the digits of
    :func:`new_run_id`: 11 of the microseconds when each id is made, then 15 random ones
    (75 bits). The random digits come from one read of random bytes, one byte a digit
    (``translate`` in C); the time's first 9 digits are encoded once per 1,024 us. The
    times are strictly increasing (a microsecond more than the last when the clock has not
    moved: ids are made faster than one a microsecond), so the ids sort in the order they
    were made, a campaign's runs in the order of its items."""
    random = os.urandom(15 * count).translate(_RANDOM_DIGIT).decode("ascii")
    now = time.time_ns
    low = _LOW_DIGITS
    ids: list[RunId] = []
    high, prefix, last = -1, "", -1
    for i in range(0, 15 * count, 15):
        micros = now() // 1_000
        if micros <= last:
            micros = last + 1
        last = micros
        if micros >> 10 != high:
            high = micros >> 10
            prefix = "run_" + _encode(high, 9)
        ids.append(RunId(prefix + low[micros & 1023] + random[i : i + 15]))
    return ids


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
