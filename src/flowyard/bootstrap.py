"""The one place that wires settings -> store -> registry -> engine -> service/workers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from flowyard import __version__
from flowyard.domain import jsonvalue
from flowyard.domain.clock import utc_now
from flowyard.domain.errors import DefinitionError, FlowyardError, NotFound
from flowyard.domain.records import WorkflowRecord
from flowyard.engine.cache import WorkflowCache
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine, ExpressionLimits
from flowyard.nodes.registry import NodeRegistry, default_registry
from flowyard.observability import Metrics, PoolStats
from flowyard.outbound import Authenticators, EgressPolicy, Outbound, guarded_client
from flowyard.security import (
    AuthService,
    CredentialResolver,
    CredentialService,
    ThrottlePolicy,
    derive_key,
)
from flowyard.security.keycheck import open_vault
from flowyard.service import AdminService, FlowyardService
from flowyard.service.changes import ChangeHub
from flowyard.service.hooks import HookService
from flowyard.service.quotas import QuotaService
from flowyard.service.retention import Pruner, RetentionService, parse_setting
from flowyard.service.schedules import ScheduleService
from flowyard.service.triggers import TriggerDispatcher, TriggerService
from flowyard.settings import Settings
from flowyard.store import Store, open_store
from flowyard.store.ports import EventFeed, EventListener
from flowyard.triggers.schedules.scheduler import Scheduler, SchedulerConfig
from flowyard.worker import Worker, WorkerConfig
from flowyard.worker.execute import StepExecutor
from flowyard.worker.foreground import Foreground
from flowyard.worker.quotas import QuotaGate

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
    #: Outbound requests of nodes over ``http`` (credential application, redirects).
    outbound: Outbound
    #: Readiness, queue depth and the audit log.
    admin: AdminService
    #: Provider quotas (admins manage them; workers take through the store).
    quotas: QuotaService
    #: Webhook triggers: editors manage them; their public URLs start runs.
    hooks: HookService
    #: Event triggers (run ends, named events) and the debounce/throttle gate.
    triggers: TriggerService
    #: Fires due schedules: runs beside this process's first worker (none in an API-only
    #: process); the schedules API's "trigger now" fires through it too.
    scheduler: Scheduler
    #: Schedules' use cases (create, read with the next fire times, pause, trigger).
    schedules: ScheduleService
    #: Retention: policies and prunes (``flowyard prune``; the periodic pruner beside this
    #: process's first worker).
    retention: RetentionService
    clock: Callable[[], datetime] = utc_now
    metrics: Metrics = field(default_factory=Metrics)
    workers: list[Worker] = field(default_factory=list)
    #: This process's API requests in flight, which its workers yield to (worker/foreground.py).
    foreground: Foreground = field(default_factory=Foreground)

    @property
    def events(self) -> EventFeed:
        """The store's notifier: run events by cursor and wake-ups (live streams)."""
        return self.store

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
            outbound=self.outbound,
            max_output_bytes=s.max_output_bytes,
        )
        worker = Worker(
            self.store,
            executor,
            config,
            worker_id=worker_id,
            clock=self.clock,
            metrics=self.metrics,
            quotas=QuotaGate(self.store, clock=self.clock),
            foreground=self.foreground,
        )
        if not self.workers:
            # One scheduler and one trigger dispatcher per process are enough: every process
            # polls, and a tick's unique key (a trigger's idempotency key) lets one fire it.
            if s.scheduler:
                worker.companions.append(self.scheduler.run)
            worker.companions.append(self.new_dispatcher().run)
            # One pruner per process too; a lease row lets one prune at a time anywhere.
            if s.pruner:
                worker.companions.append(self.new_pruner(worker.id).run)
        self.workers.append(worker)
        return worker

    def new_dispatcher(self) -> TriggerDispatcher:
        """The trigger loop a worker process runs beside its workers (run-end triggers,
        debounced starts)."""
        return TriggerDispatcher(self.triggers, interval_s=max(self.settings.poll_interval_s, 0.05))

    def new_pruner(self, owner: str) -> Pruner:
        """The periodic prune a worker process runs beside its first worker."""
        return Pruner(
            self.retention,
            self.store,
            owner=owner,
            interval_s=self.settings.prune_interval_s,
            clock=self.clock,
        )

    def wake_workers(self) -> None:
        """New work was enqueued in this process: in-process workers claim it at once."""
        for worker in self.workers:
            worker.wake()

    async def listen_for_work(self) -> EventListener | None:
        """On PostgreSQL, wake this process's workers whenever any process commits events (a
        run started by another API process or the CLI, a signal, a step another worker
        finished), not at their next poll; None where the store cannot notify (SQLite) or
        LISTEN cannot connect (logged): they poll. The caller closes the listener."""
        if not self.workers:
            return None
        return await self.events.listen_for_events(self.wake_workers)

    def check_worker_leases(self) -> None:
        """A run was cancelled here: in-process workers re-check their leases at once."""
        for worker in self.workers:
            worker.check_leases()

    async def load_samples(self, directory: str | Path) -> list[str]:
        """Create the workflow of every ``*.json`` definition of ``directory`` that does not
        exist yet; returns the names created. A workflow of that name that exists (edited,
        or archived) is left as it is: samples seed a database, they never overwrite it.
        A sample whose credentials do not exist yet is saved all the same, and the log says
        which ones its runs need (the provider samples name theirs: ``salesforce``,
        ``mail``, ``instagram``)."""
        loaded = []
        for path in sorted(Path(directory).glob("*.json")):
            try:
                raw = jsonvalue.loads(path.read_text())
                name = raw.get("name") if isinstance(raw, dict) else None
                if isinstance(name, str) and await self._workflow_exists(name):
                    _log.info("sample %s not loaded: workflow %r exists", path, name)
                    continue
                record = await self._create_sample(path, raw)
            except (FlowyardError, ValueError) as exc:
                _log.error("sample %s not loaded: %s", path, exc)
                continue
            loaded.append(record.name)
        return loaded

    async def _create_sample(self, path: Path, raw: Any) -> WorkflowRecord:
        try:
            record, _ = await self.service.create_workflow(raw, "samples")
        except DefinitionError as exc:
            if not exc.problems or any(p.code != "unknown_credential" for p in exc.problems):
                raise
            record, _ = await self.service.create_workflow(
                raw, "samples", require_credentials=False
            )
            missing = ", ".join(dict.fromkeys(p.message for p in exc.problems))
            _log.warning(
                "sample %s loaded; its runs fail with credential.not_found until the "
                "credentials exist (%s)",
                path,
                missing,
            )
        return record

    async def _workflow_exists(self, name: str) -> bool:
        try:
            await self.store.get_workflow(name)
        except NotFound:
            return False
        return True

    async def close(self) -> None:
        """Release the change listener, the node types' connections, the HTTP pool, the
        expression threads and the database."""
        await self.service.changes.close()
        await self.registry.aclose()
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
    check_keys: bool = True,
    registry: NodeRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Container:
    """Build (and by default migrate) everything for ``settings``.

    With ``check_keys`` the start is refused when the database holds credentials encrypted
    under a master key this process does not have (a lost key file is never replaced);
    without it those credentials stay unreadable (commands that delete them)."""
    parse_setting(settings.retention)  # InvalidInput before anything is opened
    store = open_store(
        settings.db_url,
        pool_size=settings.db_pool_size,
        pooler=settings.db_pooler,
        listen_url=settings.db_listen_url,
    )
    try:
        if migrate:
            await store.migrate()
        master, vault = await open_vault(settings, store, check=check_keys)
    except BaseException:
        await store.close()
        raise
    registry = registry or default_registry(load_plugins=settings.load_plugins)
    expressions = ExpressionEngine(expression_limits(settings))
    validator = DefinitionValidator(registry, expressions)

    async def load(workflow_id: str, version: int) -> dict[str, object]:
        from flowyard.domain.ids import WorkflowId

        return (await store.get_version(WorkflowId(workflow_id), version)).definition

    cache = WorkflowCache(validator, load)
    # The one outbound client of the process: every node and integration request goes
    # through its egress-guarded transport (FLOWYARD_EGRESS_POLICY / FLOWYARD_EGRESS_ALLOW).
    http = guarded_client(
        EgressPolicy.from_settings(settings),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
    metrics = Metrics(version=__version__)
    metrics.watch_pools(lambda: (PoolStats(*usage) for usage in store.pool_usage()))
    service = FlowyardService(
        store,
        validator,
        cache,
        clock=clock,
        metrics=metrics,
        compile_concurrency=settings.expression_compile_concurrency,
        compile_wait_s=settings.expression_compile_wait_s,
        # PostgreSQL notifies, unless behind a transaction pooler without a LISTEN URL;
        # SQLite processes share a file and its change feed (decision 0037).
        changes=ChangeHub(
            store,
            cross_process=store.shares_changes
            if store.dialect == "sqlite"
            else settings.db_pooler == "none" or settings.db_listen_url is not None,
        ),
    )
    service.history_limit = settings.draft_history
    credentials = CredentialService(store, vault, clock=clock)
    scheduler = Scheduler(
        store,
        service,
        SchedulerConfig(
            poll_s=settings.schedule_poll_s, keep_fires_s=settings.schedule_fires_keep_s
        ),
        clock=clock,
        metrics=metrics,
    )
    auth = AuthService(
        store,
        derive_key(master, "jwt"),
        clock=clock,
        access_ttl_s=settings.access_token_ttl_s,
        refresh_ttl_s=settings.refresh_token_ttl_s,
        session_max_age_s=settings.session_max_age_s,
        password_min_score=settings.password_min_score,
        throttle=ThrottlePolicy(
            free_failures=settings.login_free_failures,
            free_failures_per_address=settings.login_free_failures_per_ip,
            backoff_base_s=settings.login_backoff_base_s,
            backoff_max_s=settings.login_backoff_max_s,
            forget_after_s=settings.login_failure_window_s,
            ipv6_prefix=settings.client_ipv6_prefix,
        ),
    )
    resolver = credentials.resolver(settings.credential_cache_ttl_s)
    triggers = TriggerService(store, service, expressions, clock=clock)
    hooks = HookService(
        store,
        service,
        resolver,
        expressions,
        clock=clock,
        public_url=settings.public_url,
        triggers=triggers,
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
        resolver,
        Outbound(http, authenticators=_authenticators(registry)),
        AdminService(store, clock=clock),
        QuotaService(store, clock=clock, credentials=store),
        hooks,
        triggers,
        scheduler,
        ScheduleService(store, service, scheduler, clock=clock),
        RetentionService(
            store,
            clock=clock,
            metrics=metrics,
            retention=settings.retention,
            batch=settings.prune_batch,
        ),
        clock,
        metrics,
    )
    scheduler.on_fired = container.wake_workers
    container.service.on_enqueue = container.wake_workers
    container.service.on_stop_requested = container.check_worker_leases
    return container


def _authenticators(registry: NodeRegistry) -> Authenticators:
    """The built-in authenticators plus those the registered node types bring."""
    authenticators = Authenticators()
    for type_, authenticator in registry.authenticators().items():
        authenticators.register(type_, authenticator)
    return authenticators
