"""The one place that wires settings -> store -> registry -> engine -> service/workers."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from flowyard.domain.errors import FlowyardError
from flowyard.engine.cache import WorkflowCache
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine, ExpressionLimits
from flowyard.nodes.registry import NodeRegistry, default_registry
from flowyard.observability import Metrics, PoolStats
from flowyard.security import (
    AuthService,
    CredentialResolver,
    CredentialService,
    Vault,
    derive_key,
    load_master_key,
)
from flowyard.service import FlowyardService
from flowyard.settings import Settings
from flowyard.store import Store, open_store
from flowyard.worker import Worker, WorkerConfig
from flowyard.worker.execute import StepExecutor
from flowyard.worker.worker import utc_now

_log = logging.getLogger("flowyard")


@dataclass
class Container:
    """Everything a process needs, built from settings. Close it when done."""

    settings: Settings
    store: Store
    registry: NodeRegistry
    expressions: ExpressionEngine
    validator: DefinitionValidator
    cache: WorkflowCache
    service: FlowyardService
    http: httpx.AsyncClient
    auth: AuthService
    #: The vault's use cases (write-only management, masked reads).
    credentials: CredentialService
    #: Decrypts credentials for node execution; handed to workers only.
    credential_resolver: CredentialResolver
    clock: Callable[[], datetime] = utc_now
    metrics: Metrics = field(default_factory=Metrics)
    workers: list[Worker] = field(default_factory=list)

    def new_worker(self, *, worker_id: str | None = None, concurrency: int | None = None) -> Worker:
        """A worker sharing this container's store, cache and HTTP pool."""
        s = self.settings
        config = WorkerConfig(
            concurrency=concurrency or s.concurrency,
            poll_interval_s=s.poll_interval_s,
            lease_s=s.lease_s,
            reap_interval_s=s.reap_interval_s,
            max_recoveries=s.max_recoveries,
            shutdown_grace_s=s.shutdown_grace_s,
        )
        executor = StepExecutor(
            self.cache,
            self.expressions,
            self.http,
            clock=self.clock,
            credentials=self.credential_resolver,
            workflows=self.service,
        )
        worker = Worker(
            self.store,
            executor,
            config,
            worker_id=worker_id,
            clock=self.clock,
            metrics=self.metrics,
        )
        self.workers.append(worker)
        return worker

    def wake_workers(self) -> None:
        """New work was enqueued in this process: in-process workers claim it at once."""
        for worker in self.workers:
            worker.wake()

    def check_worker_leases(self) -> None:
        """A run was cancelled here: in-process workers re-check their leases at once."""
        for worker in self.workers:
            worker.check_leases()

    async def load_samples(self, directory: str | Path) -> list[str]:
        """Save every ``*.json`` definition of ``directory``; returns the names loaded."""
        loaded = []
        for path in sorted(Path(directory).glob("*.json")):
            try:
                record, _, _ = await self.service.save_workflow(
                    json.loads(path.read_text()), "samples"
                )
            except (FlowyardError, ValueError) as exc:
                _log.error("sample %s not loaded: %s", path, exc)
                continue
            loaded.append(record.name)
        return loaded

    async def close(self) -> None:
        """Release the HTTP pool, the expression threads and the database."""
        await self.http.aclose()
        self.expressions.close()
        await self.store.close()


def expression_limits(settings: Settings) -> ExpressionLimits:
    """The expression engine's limits from the ``FLOWYARD_EXPRESSION_*`` settings."""
    return ExpressionLimits(
        timeout_s=settings.expression_timeout_s,
        max_output_chars=settings.expression_max_output_chars,
        max_total_chars=settings.expression_max_total_chars,
        max_operations=settings.expression_max_operations,
        threads=settings.expression_threads,
        compile_budget_s=settings.expression_compile_budget_s,
        max_templates=settings.expression_max_templates,
        max_template_tokens=settings.expression_max_template_tokens,
    )


async def build(
    settings: Settings,
    *,
    migrate: bool = True,
    registry: NodeRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Container:
    """Build (and by default migrate) everything for ``settings``."""
    store = open_store(settings.db_url, pool_size=settings.db_pool_size)
    if migrate:
        await store.migrate()
    registry = registry or default_registry(load_plugins=settings.load_plugins)
    expressions = ExpressionEngine(expression_limits(settings))
    validator = DefinitionValidator(registry, expressions)

    async def load(workflow_id: str, version: int) -> dict[str, object]:
        from flowyard.domain.ids import WorkflowId

        return (await store.get_version(WorkflowId(workflow_id), version)).definition

    cache = WorkflowCache(validator, load)
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
    metrics = Metrics()
    metrics.watch_pools(lambda: (PoolStats(*usage) for usage in store.pool_usage()))
    service = FlowyardService(
        store,
        validator,
        cache,
        clock=clock,
        metrics=metrics,
        compile_concurrency=settings.expression_compile_concurrency,
        compile_wait_s=settings.expression_compile_wait_s,
    )
    master = load_master_key(settings)
    vault = Vault.from_settings(settings, master)
    credentials = CredentialService(store, vault, clock=clock)
    auth = AuthService(
        store,
        derive_key(master, "jwt"),
        clock=clock,
        access_ttl_s=settings.access_token_ttl_s,
        refresh_ttl_s=settings.refresh_token_ttl_s,
    )
    container = Container(
        settings,
        store,
        registry,
        expressions,
        validator,
        cache,
        service,
        http,
        auth,
        credentials,
        credentials.resolver(settings.credential_cache_ttl_s),
        clock,
        metrics,
    )
    container.service.on_enqueue = container.wake_workers
    container.service.on_stop_requested = container.check_worker_leases
    return container
