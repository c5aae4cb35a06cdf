"""What every use case of the service shares: the store, the validator, the compiled-
workflow cache, the clock and the wake-up callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from flowyard.domain.ids import WorkflowId
from flowyard.engine.cache import WorkflowCache
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.validation import DefinitionValidator
from flowyard.observability import Metrics
from flowyard.service.changes import ChangeHub
from flowyard.service.readcache import ReadCache
from flowyard.store.ports import (
    CampaignStore,
    ChangeFeed,
    CredentialStore,
    DraftStore,
    LifecycleStore,
    QueueStore,
    RunStore,
    WorkflowStore,
)

#: Definitions compiled at once per process for validate/create/update, and how long a
#: request waits for its turn before it is refused (Busy: 503 with Retry-After).
COMPILE_CONCURRENCY = 2
COMPILE_WAIT_S = 2.0


class ServiceStore(
    ChangeFeed,
    WorkflowStore,
    DraftStore,
    RunStore,
    LifecycleStore,
    QueueStore,
    CredentialStore,
    CampaignStore,
    Protocol,
):
    """The ports the use cases work over: workflows and their drafts, runs, their lifecycle,
    the queue (a cancel cancels orphaned children at once), credential names (definitions
    must name existing credentials) and campaigns."""


class ServiceBase:
    """The service's state; the use cases are mixins over it (see ``flowyard.service``)."""

    def __init__(
        self,
        store: ServiceStore,
        validator: DefinitionValidator,
        cache: WorkflowCache,
        *,
        clock: Callable[[], datetime],
        on_enqueue: Callable[[], None] | None = None,
        on_stop_requested: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        compile_concurrency: int = COMPILE_CONCURRENCY,
        compile_wait_s: float = COMPILE_WAIT_S,
        changes: ChangeHub | None = None,
    ) -> None:
        self.store = store
        self.validator = validator
        self.cache = cache
        self.clock = clock
        self.on_enqueue = on_enqueue
        self.on_stop_requested = on_stop_requested
        self.metrics = metrics
        self.compile_wait_s = compile_wait_s
        self._compile_slots = asyncio.Semaphore(compile_concurrency)
        #: Workflow and draft changes of every process (listens only where enabled).
        self.changes = changes or ChangeHub(store, cross_process=False)
        #: Workflows and versions as read (decision 0030).
        self.reads = ReadCache(self.changes, metrics=metrics)
        #: Which workflow version each recently moved run is on (a hint: checked under the
        #: run's lock when it moves, so a run retried on another version is read again).
        self._run_workflows: _Recent[str, tuple[WorkflowId, int]] = _Recent(10_000)

    async def compiled(self, workflow_id: WorkflowId, version: int) -> CompiledWorkflow:
        """The compiled form of a stored version."""
        return await self.cache.get(workflow_id, version)

    def _enqueued(self) -> None:
        if self.on_enqueue is not None:
            self.on_enqueue()


K = TypeVar("K")
V = TypeVar("V")


class _Recent(Generic[K, V]):
    """The latest ``size`` entries put (older ones are forgotten)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items.pop(key, None)
        self._items[key] = value
        if len(self._items) > self.size:
            del self._items[next(iter(self._items))]
