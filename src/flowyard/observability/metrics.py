"""Prometheus metrics of one flowyard process.

Every :class:`Metrics` owns its own ``CollectorRegistry`` (never the global default), so two
containers in one process (tests, embedded use) never share or clash on series. Recording is
a dictionary lookup and a lock-protected add: cheap enough for the worker's hot path.

This module imports nothing of flowyard's: callers hand in callables (queue depth, pool
statistics) instead of stores or engines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["TEXT_CONTENT_TYPE", "Metrics", "PoolStats", "QueueHealth"]

#: What :meth:`Metrics.render` produces: the Prometheus text format 0.0.4, which every
#: scraper reads (Prometheus 2 and 3, the agents that scrape the same format). It is
#: prometheus_client's own answer to a scraper that does not negotiate; its
#: ``CONTENT_TYPE_LATEST`` says ``version=1.0.0`` for the same bytes, which older scrapers
#: do not know.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds; steps range from an in-memory ``set`` to slow HTTP calls.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

#: Step statuses always exported by the queue-depth gauge (0 when absent).
_QUEUE_STATUSES = ("scheduled", "running", "retrying", "waiting")


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Connections of one database connection pool, and the time spent waiting for them."""

    engine: str
    in_use: int
    size: int
    #: Seconds spent getting a connection for a transaction, summed, and how many times.
    wait_s: float = 0.0
    checkouts: int = 0


@dataclass(frozen=True, slots=True)
class QueueHealth:
    """What the queue looks like now, read at scrape time (at most every few seconds)."""

    #: Steps by status.
    depth: Mapping[str, int]
    #: Age of the oldest step that is due and not claimed (None: nothing is due).
    oldest_due_s: float | None = None
    #: Database sessions waiting for a lock now (None: not known, e.g. SQLite).
    lock_waits: int | None = None


class _PoolCollector(Collector):
    """Reads pool statistics at scrape time (in memory, no query)."""

    def __init__(self, source: Callable[[], Iterable[PoolStats]]) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        in_use = GaugeMetricFamily(
            "flowyard_db_pool_in_use", "Connections checked out of the pool", labels=["engine"]
        )
        size = GaugeMetricFamily(
            "flowyard_db_pool_size", "Configured size of the connection pool", labels=["engine"]
        )
        wait = CounterMetricFamily(
            "flowyard_db_pool_wait_seconds",
            "Time transactions waited for a connection because every one was in use, summed",
            labels=["engine"],
        )
        checkouts = CounterMetricFamily(
            "flowyard_db_pool_checkouts",
            "Connections taken for a transaction",
            labels=["engine"],
        )
        for stats in self._source():
            in_use.add_metric([stats.engine], stats.in_use)
            size.add_metric([stats.engine], stats.size)
            wait.add_metric([stats.engine], stats.wait_s)
            checkouts.add_metric([stats.engine], stats.checkouts)
        yield in_use
        yield size
        yield wait
        yield checkouts


class Metrics:
    """The metrics of one process (API and/or workers), in a private registry."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, version: str | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total, memory, open files (Linux): `flowyard doctor` tells a
        # CPU-bound worker from one that waits.
        ProcessCollector(registry=r)
        if version is not None:
            # The build is told to those who may read metrics, not to anyone asking /healthz.
            Gauge(
                "flowyard_build_info", "The running flowyard version", ["version"], registry=r
            ).labels(version).set(1)
        self.runs_started = Counter(
            "flowyard_runs_started", "Runs started", ["workflow"], registry=r
        )
        self.runs_finished = Counter(
            "flowyard_runs_finished", "Runs that reached a final status", ["status"], registry=r
        )
        self.steps_finished = Counter(
            "flowyard_steps_finished",
            "Step attempts committed, by node type and outcome (step status)",
            ["node_type", "outcome"],
            registry=r,
        )
        self.step_duration = Histogram(
            "flowyard_step_duration_seconds",
            "Execution time of one step attempt (node code, without the commit)",
            ["node_type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.claim_duration = Histogram(
            "flowyard_claim_duration_seconds",
            "Time of one claim query",
            buckets=_CLAIM_BUCKETS,
            registry=r,
        )
        self.claim_batch = Histogram(
            "flowyard_claim_batch_size",
            "Steps returned by one claim: a claim pass (0: the queue was empty) or a commit "
            "continuing its runs (decision 0039)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "flowyard_step_retries",
            "Step attempts that will be retried",
            ["error_type"],
            registry=r,
        )
        self.steps_deferred = Counter(
            "flowyard_steps_deferred",
            "Steps a provider quota deferred (no token yet: due again later, not counted as "
            "an attempt), by node type",
            ["node_type"],
            registry=r,
        )
        self.quota_slowdowns = Counter(
            "flowyard_quota_slowdowns",
            "Times a provider's rate-limit answer paused the quotas of its step",
            registry=r,
        )
        self.schedule_ticks = Counter(
            "flowyard_schedule_ticks",
            "Schedule ticks by outcome: fired (a run started), skipped (overlap, or the run "
            "could not start), missed (passed over by the catch-up policy)",
            ["outcome"],
            registry=r,
        )
        self.runs_pruned = Counter(
            "flowyard_runs_pruned",
            "Finished runs deleted by retention (child runs included), by workflow",
            ["workflow"],
            registry=r,
        )
        self.lease_recoveries = Counter(
            "flowyard_lease_recoveries",
            "Steps re-queued because their worker's lease expired",
            registry=r,
        )
        self.read_cache = Counter(
            "flowyard_read_cache",
            "Reads of the workflow read cache, by part (workflow: the row with its latest "
            "version; version: an immutable version) and outcome (hit, miss)",
            ["part", "outcome"],
            registry=r,
        )
        self.steps_discarded = Counter(
            "flowyard_steps_discarded",
            "Step results thrown away at commit because another worker had taken the step over "
            "(its lease expired first): the step ran twice",
            registry=r,
        )
        self.queue_depth = Gauge(
            "flowyard_queue_depth", "Steps in the database by status", ["status"], registry=r
        )
        self.queue_oldest_due = Gauge(
            "flowyard_queue_oldest_due_seconds",
            "Age of the oldest step that is due and not claimed (0: nothing is due)",
            registry=r,
        )
        self.db_lock_waits = Gauge(
            "flowyard_db_lock_waits",
            "Database sessions waiting for a lock now (PostgreSQL; absent on SQLite)",
            registry=r,
        )
        self.http_requests = Counter(
            "flowyard_http_requests",
            "HTTP requests served, by method, route template and status code",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "flowyard_http_request_duration_seconds",
            "HTTP request latency, by method and route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._queue_refreshed_at: float | None = None
        self._queue_lock = asyncio.Lock()

    # -- sources read at scrape time --------------------------------------------------------

    def watch_pools(self, source: Callable[[], Iterable[PoolStats]]) -> None:
        """Export connection-pool gauges read from ``source`` at each scrape."""
        self.registry.register(_PoolCollector(source))

    def set_queue_depth(self, depth: Mapping[str, int] | QueueHealth) -> None:
        """Replace the queue gauges with ``depth`` (step counts by status, or the queue's
        health: counts, the oldest due step's age, lock waits)."""
        health = depth if isinstance(depth, QueueHealth) else QueueHealth(depth)
        for status in {*_QUEUE_STATUSES, *health.depth}:
            self.queue_depth.labels(status).set(health.depth.get(status, 0))
        self.queue_oldest_due.set(health.oldest_due_s or 0.0)
        if health.lock_waits is not None:
            self.db_lock_waits.set(health.lock_waits)
        self._queue_refreshed_at = time.monotonic()

    async def refresh_queue_depth(
        self,
        fetch: Callable[[], Awaitable[Mapping[str, int] | QueueHealth]],
        *,
        max_age_s: float,
    ) -> None:
        """Query the queue depth unless the last answer is younger than ``max_age_s`` (one
        query per scrape interval at most, however many scrapers). A failed query keeps the
        previous values."""
        async with self._queue_lock:
            last = self._queue_refreshed_at
            if last is not None and time.monotonic() - last < max_age_s:
                return
            self.set_queue_depth(await fetch())

    async def refresh_queue_depth_forever(
        self,
        fetch: Callable[[], Awaitable[Mapping[str, int] | QueueHealth]],
        *,
        interval_s: float,
    ) -> None:
        """Background task: refresh the queue depth every ``interval_s`` until cancelled."""
        while True:
            try:
                await self.refresh_queue_depth(fetch, max_age_s=0)
            except Exception:  # a metrics task must outlive a database hiccup
                self._queue_refreshed_at = None
            await asyncio.sleep(interval_s)

    def render(self) -> bytes:
        """The registry in the Prometheus text format 0.0.4 (:data:`TEXT_CONTENT_TYPE`)."""
        return generate_latest(self.registry)
