"""Measuring memory inside a test block."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The peak of memory allocated inside the block (bytes), in ``[0]`` after it."""
    tracemalloc.start()
    peak = [0]
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
