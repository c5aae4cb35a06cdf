"""Changes other processes make, heard in this one (decision 0030): workflow rows that changed
(the read cache forgets its "latest version" pointers) and draft changes (the streams).

One :class:`ChangeHub` per process. An API process enables it; it then listens from its
first use until the container closes (PostgreSQL: one ``LISTEN`` connection; SQLite: a tail
of the ``change_feed`` table every ~200 ms, decision 0037), reopened when lost; while it is
down the read cache re-reads every workflow's row. An in-memory SQLite database has no other
process: its hub listens to nothing and the read cache always re-reads the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from flowyard.domain.drafts import DraftEvent
from flowyard.store.ports import ChangeFeed, EventListener

_log = logging.getLogger("flowyard.service.changes")

#: Receives each draft event (called on the event loop; must not block).
DraftSubscriber = Callable[[DraftEvent], None]
#: Told a workflow's id when its row changed; None: anything may have changed.
WorkflowWatcher = Callable[[str | None], None]


class ChangeHub:
    """Workflow and draft changes of every process on the database, for this one."""

    #: How often a live listener is checked, and a lost one re-opened.
    check_s = 1.0
    #: Longest pause between attempts to connect while the database refuses.
    max_retry_s = 30.0
    #: How long the first use waits for the listener to connect.
    connect_timeout_s = 2.0

    def __init__(self, feed: ChangeFeed, *, cross_process: bool) -> None:
        self.feed = feed
        #: True where other processes' changes can be heard (PostgreSQL, a SQLite file).
        self.cross_process = cross_process
        #: Only an API process listens (``enable``); the CLI and workers do not.
        self.enabled = False
        self._listener: EventListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Event | None = None
        self._drafts: set[DraftSubscriber] = set()
        self._watchers: list[WorkflowWatcher] = []

    def enable(self) -> None:
        """Listen from the first use on (an API process)."""
        self.enabled = True

    def watch_workflows(self, watcher: WorkflowWatcher) -> None:
        """Call ``watcher`` for every workflow row that changed (and with None whenever
        notifications may have been missed)."""
        self._watchers.append(watcher)

    @property
    def live(self) -> bool:
        """True while changes made by other processes are heard at once."""
        listener = self._listener
        return listener is not None and listener.is_alive()

    async def ready(self) -> bool:
        """Start listening if enabled and not yet started (waiting for the first connection);
        :attr:`live` afterwards."""
        if not (self.enabled and self.cross_process):
            return False
        if self._task is None:
            self._first = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="flowyard-changes")
        assert self._first is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.connect_timeout_s):
                await self._first.wait()
        return self.live

    async def close(self) -> None:
        """Stop listening."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        assert self._first is not None
        retry_s = self.check_s
        try:
            while True:
                try:
                    listener = await self.feed.listen_for_changes(self._workflow, self._draft)
                except Exception:
                    _log.warning("cannot LISTEN for workflow changes; retrying", exc_info=True)
                    listener = None
                # Whatever changed while nobody listened is unknown: forget it all.
                self._forget_all()
                self._listener = listener
                self._first.set()
                try:
                    while listener is not None and listener.is_alive():
                        await asyncio.sleep(self.check_s)
                finally:
                    self._listener = None
                    self._forget_all()
                    if listener is not None:
                        with contextlib.suppress(Exception):
                            await listener.close()
                if listener is not None:
                    _log.warning("lost the LISTEN connection for workflow changes; reopening")
                    retry_s = self.check_s
                else:  # cannot connect: try again, less and less often
                    retry_s = min(retry_s * 2, self.max_retry_s)
                await asyncio.sleep(retry_s)
        finally:
            self._first.set()  # nobody waits forever for a hub that stopped

    def _forget_all(self) -> None:
        for watcher in self._watchers:
            watcher(None)

    def _workflow(self, workflow_id: str) -> None:
        for watcher in self._watchers:
            watcher(workflow_id)

    def _draft(self, payload: str) -> None:
        try:
            event = DraftEvent.from_json(payload)
        except ValueError:
            _log.warning("ignored a draft notification that is not a draft event")
            return
        self._deliver(event)

    # -- draft events ------------------------------------------------------------------------

    def subscribe(self, subscriber: DraftSubscriber) -> None:
        """Receive the draft events of every process (PostgreSQL: once :meth:`ready`)."""
        self._drafts.add(subscriber)

    @property
    def subscribers(self) -> int:
        """How many streams follow draft events here."""
        return len(self._drafts)

    def unsubscribe(self, subscriber: DraftSubscriber) -> None:
        """Stop receiving draft events."""
        self._drafts.discard(subscriber)

    def deliver(self, event: DraftEvent) -> None:
        """Hand a change this process made to its own streams (the store recorded it for
        the other processes in the change's transaction)."""
        self._deliver(event)

    def _deliver(self, event: DraftEvent) -> None:
        for subscriber in list(self._drafts):
            try:
                subscriber(event)
            except Exception:
                _log.exception("a draft event subscriber failed")

    async def announce(self, event: DraftEvent) -> None:
        """Tell every process's streams (after the change committed). Announcing is best
        effort: a failure is logged, never the change's failure (it is committed; editors
        find it by its ETag)."""
        try:
            sent = await self.feed.announce_draft(event.to_json())
        except Exception:
            _log.warning("could not announce a draft change", exc_info=True)
            return
        if not sent:  # SQLite: other processes read it from the change feed
            self._deliver(event)
