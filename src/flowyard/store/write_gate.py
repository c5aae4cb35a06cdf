"""SQLite's one writer, handed out in order of urgency (decision 0041).

A SQLite database has one write lock, and this process one write connection (a pool of
one). Waiters for it were served first come, first served: behind a backlog, a request's
write waited for the claims and commits the embedded workers had queued before it. The gate
serves urgent waiters (work of an API request, :mod:`flowyard.domain.urgency`) before the
others, each class in arrival order. A writer that holds the turn keeps it until its
transaction ends: nothing is interrupted, a request waits for at most the one transaction in
progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class WriteGate:
    """One holder at a time; urgent waiters go first."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._others: deque[asyncio.Future[None]] = deque()
        #: Turns given to an urgent waiter ahead of others that had asked before it.
        self.overtaken = 0

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._others)

    @property
    def busy(self) -> bool:
        """Whether a writer holds the gate (one asking now would wait)."""
        return self._held

    @contextlib.asynccontextmanager
    async def turn(self, urgent: bool) -> AsyncIterator[None]:
        """Hold the gate for the block (waiting for it if another holds it)."""
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._held and not self.waiting:
            self._held = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._others
        if urgent and self._others:
            self.overtaken += 1
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the turn was handed over as the waiter was cancelled
            else:
                queue.remove(waiter)
            raise

    def _release(self) -> None:
        """Hand the turn to the next waiter, urgent ones first; or free the gate."""
        for queue in (self._urgent, self._others):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._held = False
