"""The read cache of workflows (decision 0030): ``GET /workflows/{ref}`` and the service's
lookups without re-reading and re-parsing a definition.

Two parts, because only one of them can go stale:

- **versions** by ``(workflow id, version)``: immutable, so an entry is never wrong. Bounded
  by entries and by the nodes they hold (a 1,000-node definition weighs 1,000 times a
  one-node one), least recently used first out.
- **pointers** from a reference (id or name) to the workflow's row (its latest version, its
  archived flag): they change with every version, archive and publish. They are kept only
  while the process hears every change (:class:`~flowyard.service.changes.ChangeHub` is
  live: PostgreSQL ``NOTIFY`` in the changing transaction); a change forgets the workflow's
  pointers, a lost listener forgets them all and stops keeping them until it is back. A
  pointer also expires after ``pointer_ttl_s``, which bounds how stale a silently broken
  connection could make it. Without a live hub (SQLite, whose other processes cannot
  notify; the CLI; workers) the row is read every time: one indexed row, the cheap check of
  which version is the latest.

A read that raced a change is not kept: every change moves a generation counter, and a row
read before the counter moved is returned but not stored.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import VersionRecord, WorkflowRecord
from flowyard.observability import Metrics
from flowyard.service.changes import ChangeHub

#: Defaults: versions kept, nodes they may hold together, pointers kept and their lifetime.
MAX_VERSIONS = 256
MAX_VERSION_NODES = 50_000
MAX_POINTERS = 2_048
POINTER_TTL_S = 30.0


def _weight(record: VersionRecord) -> int:
    """What a version costs to keep: its nodes (or states), at least one."""
    definition = record.definition
    size = 1
    for key in ("nodes", "states"):
        items = definition.get(key)
        if isinstance(items, list | dict):
            size += len(items)
    return size


class ReadCache:
    """Workflow rows and versions as the service reads them. Callers must not change what
    it returns (versions are shared between requests)."""

    def __init__(
        self,
        changes: ChangeHub,
        *,
        metrics: Metrics | None = None,
        max_versions: int = MAX_VERSIONS,
        max_version_nodes: int = MAX_VERSION_NODES,
        max_pointers: int = MAX_POINTERS,
        pointer_ttl_s: float = POINTER_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.changes = changes
        self.metrics = metrics
        self.max_versions = max_versions
        self.max_version_nodes = max_version_nodes
        self.max_pointers = max_pointers
        self.pointer_ttl_s = pointer_ttl_s
        self._clock = clock
        self._versions: OrderedDict[tuple[str, int], tuple[int, VersionRecord]] = OrderedDict()
        self._version_nodes = 0
        self._pointers: OrderedDict[str, tuple[float, WorkflowRecord]] = OrderedDict()
        self._generation = 0
        changes.watch_workflows(self.forget)

    def forget(self, workflow_id: str | None) -> None:
        """A workflow's row changed (None: any may have): drop its pointers."""
        self._generation += 1
        if workflow_id is None:
            self._pointers.clear()
            return
        for ref, (_, record) in list(self._pointers.items()):
            if record.id == workflow_id:
                del self._pointers[ref]

    def clear(self) -> None:
        """Forget everything (the benchmark's uncached reads)."""
        self.forget(None)
        self._versions.clear()
        self._version_nodes = 0

    def _count(self, part: str, hit: bool) -> None:
        if self.metrics is not None:
            self.metrics.read_cache.labels(part, "hit" if hit else "miss").inc()

    async def workflow(
        self, ref: str, load: Callable[[str], Awaitable[WorkflowRecord]]
    ) -> WorkflowRecord:
        """The workflow ``ref`` names (id or name): kept while the hub is live, else loaded."""
        if not await self.changes.ready():
            return await load(ref)
        found = self._pointers.get(ref)
        now = self._clock()
        if found is not None and now - found[0] < self.pointer_ttl_s:
            self._pointers.move_to_end(ref)
            self._count("workflow", True)
            return found[1]
        self._count("workflow", False)
        generation = self._generation
        record = await load(ref)
        if generation == self._generation and self.changes.live:
            self._pointers[ref] = (now, record)
            self._pointers.move_to_end(ref)
            while len(self._pointers) > self.max_pointers:
                self._pointers.popitem(last=False)
        return record

    async def version(
        self,
        workflow_id: WorkflowId,
        version: int,
        load: Callable[[WorkflowId, int], Awaitable[VersionRecord]],
    ) -> VersionRecord:
        """One version (immutable: kept whatever the hub says)."""
        key = (workflow_id, version)
        found = self._versions.get(key)
        if found is not None:
            self._versions.move_to_end(key)
            self._count("version", True)
            return found[1]
        self._count("version", False)
        record = await load(workflow_id, version)
        weight = _weight(record)
        if key not in self._versions and weight <= self.max_version_nodes:
            self._versions[key] = (weight, record)
            self._version_nodes += weight
            while (
                len(self._versions) > self.max_versions
                or self._version_nodes > self.max_version_nodes
            ):
                dropped, _ = self._versions.popitem(last=False)[1]
                self._version_nodes -= dropped
        return record
