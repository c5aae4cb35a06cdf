"""Foreground first: a process's embedded workers yield to its API requests.

``flowyard serve`` runs its workers in the API's event loop (and, on SQLite, on the same
write connection). Behind a backlog they are always busy, and every request waits for the
loop and the connection between their steps: an action that costs 9 ms idle took 14 ms p50
with 50,000 steps queued. The API counts its requests in flight here; before a claim pass and
before a commit, a worker waits until none is in flight, for at most ``max_yield_s`` (so a
long request, e.g. a webhook that waits for its run to finish, slows the workers and never
stops them). Standalone workers (``flowyard worker``) have no requests to yield to.

For the same reason a serving process's workers do not chain (decision 0039): a commit that
claims and starts the next steps of its runs skips the yield before a claim pass, and on
SQLite an action after ``submit`` waited 5-7 ms longer (p50) for the worker's burst."""

from __future__ import annotations

import asyncio


class Foreground:
    """Requests in flight in this process, and a bounded wait for none."""

    def __init__(self, max_yield_s: float = 0.02) -> None:
        self.max_yield_s = max_yield_s
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        #: True in a process that serves the API (``flowyard serve``): its workers are not
        #: alone, and leave drain-only shortcuts out.
        self.serving = False
        #: Waits that ended because the requests finished / because the bound ran out.
        self.yielded = 0
        self.overran = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        self._in_flight += 1
        self._quiet.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight <= 0:
            self._in_flight = 0
            self._quiet.set()

    async def yield_to_requests(self) -> None:
        """Return when no request is in flight, or after ``max_yield_s``."""
        if self._in_flight == 0:
            return
        try:
            async with asyncio.timeout(self.max_yield_s):
                await self._quiet.wait()
            self.yielded += 1
        except TimeoutError:
            self.overran += 1


class NoForeground(Foreground):
    """A standalone worker's: nothing to yield to."""

    async def yield_to_requests(self) -> None:
        return None


#: Shared by every worker without an API beside it.
NO_FOREGROUND = NoForeground()


__all__ = ["NO_FOREGROUND", "Foreground", "NoForeground"]
