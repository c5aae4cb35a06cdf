"""The worker loop: claim -> execute -> commit, with leases, heartbeats, recovery and a
graceful shutdown.

Completions are committed in small batches by one committer task: on SQLite every commit is
a write-lock round and an fsync, so batching is what lets one file database keep up with many
concurrent steps. A step stays counted as in flight until its result is committed, which keeps
the claim rate bounded by ``concurrency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flowyard.domain.clock import utc_now
from flowyard.domain.commands import StepCompletion, Transition
from flowyard.domain.errors import DefinitionError, StoreRejected, StoreUnavailable
from flowyard.domain.ids import RunId, StepId, new_worker_id
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.engine.settlement import deferred, uncommittable
from flowyard.observability import Metrics
from flowyard.store.ports import Claimed, ClaimRequest, QueueStore, RunState
from flowyard.worker.execute import StepExecutor
from flowyard.worker.foreground import NO_FOREGROUND, Foreground
from flowyard.worker.quotas import QuotaGate

_log = logging.getLogger("flowyard.worker")
#: Deferred steps due later than this are found by the regular polls.
MAX_WAKE_DELAY_S = 60.0
#: A worker continues a run it has just advanced (its next steps claimed in the commit,
#: decision 0039) this many times in a row; then the run's next step goes back to the
#: queue's fair order, so long chains of quick steps do not keep slots from other lanes.
MAX_CHAIN = 8


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has ended (without swallowing a cancellation
    of the caller)."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        _log.error("background task %s failed", task.get_name(), exc_info=task.exception())


async def _awaited(loop: Callable[[], Awaitable[None]]) -> None:
    await loop()


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Tuning knobs of one worker."""

    concurrency: int = 32
    poll_interval_s: float = 0.25
    lease_s: float = 30.0
    heartbeat_s: float | None = None  # default lease_s / 3
    reap_interval_s: float = 5.0
    max_recoveries: int = 3
    shutdown_grace_s: float = 30.0
    commit_batch: int = 256
    commit_linger_s: float = 0.002
    #: Claim the steps a commit makes due in its own runs in that commit (decision 0039).
    chain: bool = True

    @property
    def heartbeat_every(self) -> float:
        """Seconds between lease extensions."""
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3


@dataclass(slots=True)
class WorkerStats:
    """Counters for logs, metrics and tests."""

    claimed: int = 0
    committed: int = 0
    discarded: int = 0
    recovered: int = 0
    released: int = 0
    #: Of ``claimed``: claimed by a commit continuing their run (decision 0039).
    chained: int = 0
    deferred: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


class Worker:
    """One worker: many concurrent steps in one asyncio loop."""

    def __init__(
        self,
        store: QueueStore,
        executor: StepExecutor,
        config: WorkerConfig | None = None,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        metrics: Metrics | None = None,
        quotas: QuotaGate | None = None,
        foreground: Foreground = NO_FOREGROUND,
    ) -> None:
        self.store = store
        #: The API requests of this process, which claims and commits yield to.
        self.foreground = foreground
        #: Provider quotas (None: no step is limited).
        self.quotas = quotas
        self.metrics = metrics or Metrics()
        self.executor = executor
        self.config = config or WorkerConfig()
        self.id = worker_id or new_worker_id(f"{socket.gethostname()}:{os.getpid()}")
        self.clock = clock
        self.stats = WorkerStats()
        self._held: dict[StepId, StepRecord] = {}
        #: Of the held steps, those claimed by a commit that continued their run: how many
        #: times in a row (decision 0039).
        self._chained: dict[StepId, int] = {}
        self._tasks: dict[StepId, asyncio.Task[None]] = {}
        self._lost: set[StepId] = set()
        self._beat = asyncio.Event()
        self._results: asyncio.Queue[StepCompletion] = asyncio.Queue()
        self._slots = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        #: Loops that live and die with this worker's run (the process's scheduler): started
        #: with the claim loop, cancelled when it stops claiming.
        self.companions: list[Callable[[], Awaitable[None]]] = []

    def wake(self) -> None:
        """Claim now instead of waiting for the next poll (new work was just enqueued)."""
        self._wake.set()

    def stop(self) -> None:
        """Ask the worker to stop claiming and shut down gracefully."""
        self._stopping.set()
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Steps claimed and not yet committed."""
        return len(self._held)

    async def run(self) -> None:
        """Work until :meth:`stop` is called, then drain or release what is in flight."""
        _log.info("worker %s started (concurrency %d)", self.id, self.config.concurrency)
        committer = asyncio.create_task(self._commit_loop(), name=f"{self.id}-committer")
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"{self.id}-heartbeat")
        reaper = asyncio.create_task(self._reap_loop(), name=f"{self.id}-reaper")
        companions = [
            asyncio.create_task(_awaited(loop), name=f"{self.id}-companion-{i}")
            for i, loop in enumerate(self.companions)
        ]
        try:
            await self._claim_loop()
        finally:
            # Stop taking over other workers' steps, but keep our leases alive while draining:
            # the grace period may outlast the lease, and a lapsed lease lets another worker
            # re-run a step that is still executing here (a repeated side effect).
            for task in companions:
                await _cancel(task)
            await _cancel(reaper)
            try:
                await self._drain()
            finally:
                await _cancel(heartbeat)
                await _cancel(committer)
            _log.info("worker %s stopped: %s", self.id, self.stats)

    async def run_until(self, done: Callable[[], bool], *, timeout_s: float | None = None) -> None:
        """Run until ``done()`` is true (checked after each commit and poll) — for the CLI's
        ``run --wait`` and for tests."""

        async def watch() -> None:
            while not done():
                await asyncio.sleep(0.02)
            self.stop()

        watcher = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(timeout_s):
                await self.run()
        finally:
            watcher.cancel()

    # -- claiming and executing ------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = self.config.poll_interval_s
        while not self._stopping.is_set():
            free = self.config.concurrency - len(self._held)
            if free <= 0:
                self._slots.clear()
                await self._wait(self._slots, None)
                continue
            await self.foreground.yield_to_requests()
            try:
                started = time.perf_counter()
                work = await self.store.claim_work(self._request(free), self.clock())
                claimed, states = work.steps, work.states
                self.metrics.claim_duration.observe(time.perf_counter() - started)
                self.metrics.claim_batch.observe(len(claimed))
            except StoreUnavailable as exc:
                _log.warning("worker %s: store unavailable, backing off: %s", self.id, exc)
                await self._wait(self._wake, min(backoff, 5.0))
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = self.config.poll_interval_s
            for step in claimed:
                self._start(step, states.get((step.run_id, step.branch)))
            if len(claimed) < free:
                # Less than we could take: the queue is (nearly) empty, so wait for a wake-up.
                self._wake.clear()
                await self._wait(self._wake, self.config.poll_interval_s)

    def _request(self, limit: int, runs: frozenset[RunId] | None = None) -> ClaimRequest:
        return ClaimRequest(
            self.id,
            limit,
            self.config.lease_s,
            listening=self.executor.listening,
            runs=runs,
        )

    def _chain_request(self, batch: list[StepCompletion]) -> ClaimRequest | None:
        """Continue the runs of this batch: the slots its steps free, for the steps it makes
        due in runs not continued ``MAX_CHAIN`` times in a row already. None while stopping
        (nothing new is started), when chaining is off, or in a process that serves the API
        (worker/foreground.py)."""
        if not self.config.chain or self.foreground.serving or self._stopping.is_set():
            return None
        runs = frozenset(
            c.step.run_id for c in batch if self._chained.get(c.step.id, 0) < MAX_CHAIN
        )
        return self._request(len(batch), runs) if runs else None

    async def _wait(self, event: asyncio.Event, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                stop = asyncio.ensure_future(self._stopping.wait())
                wait = asyncio.ensure_future(event.wait())
                try:
                    await asyncio.wait({stop, wait}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    wait.cancel()

    def _start(self, step: StepRecord, state: RunState | None, chained: int = 0) -> None:
        self.stats.claimed += 1
        self._held[step.id] = step
        if chained:
            self._chained[step.id] = chained
        self._tasks[step.id] = asyncio.create_task(
            self._execute(step, state), name=f"step-{step.id}"
        )

    async def _execute(self, step: StepRecord, state: RunState | None) -> None:
        try:
            # In a serving process, a step's work waits for the API's requests in flight
            # like claims and commits do (decision 0034): 32 steps run between two awaits
            # of a request otherwise.
            await self.foreground.yield_to_requests()
            started = time.perf_counter()
            keys = await self._quota_keys(step, state)
            retry_at = await self._take(keys, step) if keys else None
            if retry_at is not None:
                # No token or no slot: the step goes back to the queue for when one is
                # likely free, uncounted.
                self.stats.deferred += 1
                self.metrics.steps_deferred.labels(step.node_type).inc()
                await self._results.put(StepCompletion(step, deferred(step, keys, retry_at)))
                self._wake_at(retry_at)
                return
            transition = await self.executor.execute(step, state)
            if keys and self.quotas is not None:
                await self._slow_down(keys, transition)
        except asyncio.CancelledError:
            if step.id not in self._lost:
                raise
            # The step was cancelled or taken over elsewhere: drop it without a result.
            self._lost.discard(step.id)
            self._forget(step.id)
            self._slots.set()
            return
        self.metrics.step_duration.labels(step.node_type).observe(time.perf_counter() - started)
        await self._results.put(StepCompletion(step, transition))

    async def _quota_keys(self, step: StepRecord, state: RunState | None) -> list[str]:
        """The quota keys the step is subject to: none without quotas (nothing is read), and
        none when the quotas cannot be read now (a step is not held back by an outage of
        the table that only paces it; the store's next answer restores the pacing)."""
        if self.quotas is None:
            return []
        try:
            per_key = state is not None and state.run.limit_key is not None
            if not per_key and not await self.quotas.known():
                return []
            return await self.quotas.limited(await self.executor.quota_keys(step, state))
        except StoreUnavailable as exc:
            _log.warning("worker %s: quotas unavailable, not pacing: %s", self.id, exc)
            return []

    def _wake_at(self, when: datetime) -> None:
        """Claim at ``when`` rather than at the next poll after it: a token left waiting
        for its step is rate lost (the bucket holds only ``burst`` of them)."""
        delay = (when - self.clock()).total_seconds()
        if 0 < delay < MAX_WAKE_DELAY_S:
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _take(self, keys: list[str], step: StepRecord) -> datetime | None:
        """A token and a slot of each key, or when to try again; a store that cannot answer
        defers the step a second (going ahead unpaced is what the quota exists to prevent)."""
        assert self.quotas is not None
        try:
            return await self.quotas.take(keys, step)
        except StoreUnavailable as exc:
            _log.warning("worker %s: cannot take quota tokens, deferring: %s", self.id, exc)
            return self.clock() + timedelta(seconds=1)

    async def _slow_down(self, keys: list[str], transition: Transition) -> None:
        """A provider refused for its rate: every worker backs off (see QuotaGate)."""
        assert self.quotas is not None
        try:
            if await self.quotas.slow_down(keys, transition.error):
                self.metrics.quota_slowdowns.inc()
        except StoreUnavailable as exc:
            _log.warning("worker %s: could not slow the quotas down: %s", self.id, exc)

    # -- committing ------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            first = await self._results.get()
            batch = [first]
            if self.config.commit_linger_s > 0 and self._executing(queued=1):
                # Wait a moment for the results of steps still executing to join the batch;
                # when none is executing, nothing would join it (a lone run at idle).
                await asyncio.sleep(self.config.commit_linger_s)
            await self.foreground.yield_to_requests()
            while len(batch) < self.config.commit_batch and not self._results.empty():
                batch.append(self._results.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._results.task_done()

    def _executing(self, queued: int) -> bool:
        """Whether a held step is still executing (its result not among the ``queued`` taken
        off the results queue, nor in it)."""
        return len(self._held) > queued + self._results.qsize()

    async def _commit(self, batch: list[StepCompletion]) -> None:
        delay = 0.1
        chain = self._chain_request(batch)
        while True:
            try:
                result = await self.store.complete_steps(batch, self.clock(), chain=chain)
                break
            except StoreUnavailable as exc:
                # Results are only in memory until committed: keep trying. If we die here the
                # lease expires and another worker re-runs the step (idempotency keys cover it).
                _log.warning(
                    "worker %s: cannot commit %d results yet: %s", self.id, len(batch), exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except StoreRejected as exc:
                # The database refused the batch (not a connection problem): one result in
                # it cannot be stored. Find it, store its step as failed, keep the others.
                if len(batch) > 1:
                    for completion in batch:
                        await self._commit([completion])
                    return
                replaced = uncommittable(batch[0], exc.__class__.__name__)
                if replaced is None:
                    # No traceback: the database's message may quote the refused value.
                    _log.error("worker %s: dropping a result nobody can store (%s)", self.id, exc)
                    self._forget(batch[0].step.id)
                    return
                _log.error(
                    "worker %s: the result of step %s (%s) cannot be stored: %s",
                    self.id,
                    batch[0].step.id,
                    batch[0].step.node_id,
                    exc,
                )
                batch = [replaced]
            except Exception:
                # Unknown trouble: keep the results and try again, as for an outage.
                _log.exception("worker %s: committing %d results failed", self.id, len(batch))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        scheduled_now = forked = False
        for ended in result.settled.values():
            self.metrics.runs_finished.labels(ended.value).inc()
        depth: dict[RunId, int] = {}
        for completion in batch:
            run_id = completion.step.run_id
            depth[run_id] = max(depth.get(run_id, 0), self._chained.pop(completion.step.id, 0))
        for completion, ok in zip(batch, result.applied, strict=True):
            self._forget(completion.step.id)
            status = completion.transition.step_status.value
            if ok:
                self.stats.committed += 1
                self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
                self._record(completion)
                tr = completion.transition
                # Next steps, forks and child runs are claimable at once.
                scheduled_now = scheduled_now or bool(tr.next_steps)
                forked = forked or bool(tr.fork or tr.child)
            else:
                self.stats.discarded += 1
                self.metrics.steps_discarded.inc()
        started = await self._continue(result.chained, depth)
        self._slots.set()
        # Claimable work this commit did not take itself: claim it now, not at the next poll.
        if forked or (scheduled_now and started < len(batch)):
            self._wake.set()

    async def _continue(self, chained: Claimed, depth: dict[RunId, int]) -> int:
        """Start the steps a commit claimed for the runs it advanced (decision 0039); how
        many. A worker asked to stop meanwhile gives them back instead."""
        if not chained.steps:
            return 0
        if self._stopping.is_set():
            await self._release(chained.steps)
            return 0
        self.metrics.claim_batch.observe(len(chained.steps))
        for step in chained.steps:
            self.stats.chained += 1
            self._start(
                step, chained.states.get((step.run_id, step.branch)), depth.get(step.run_id, 0) + 1
            )
        return len(chained.steps)

    def _forget(self, step_id: StepId) -> None:
        """The step is no longer held here (its result committed or dropped, or released)."""
        self._held.pop(step_id, None)
        self._tasks.pop(step_id, None)
        self._chained.pop(step_id, None)

    def _record(self, completion: StepCompletion) -> None:
        """Metrics of one committed step: its outcome and a retry. (The runs a batch ended
        are counted from the store's answer: with branches, a path that ends does not
        always end its run.)"""
        step, tr = completion.step, completion.transition
        if tr.attempt_delta < 0:
            return  # not an attempt (a deferral, counted when it was decided)
        m = self.metrics
        m.steps_finished.labels(step.node_type, tr.step_status.value).inc()
        if tr.step_status == StepStatus.RETRYING:
            m.retries.labels(tr.error.type if tr.error else "unknown").inc()

    # -- leases ----------------------------------------------------------------------------

    def check_leases(self) -> None:
        """Heartbeat now: a run was cancelled or timed out in this process, so a step running
        here may have to stop (other processes learn it at their next regular heartbeat)."""
        self._beat.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.heartbeat_every):
                    await self._beat.wait()
            self._beat.clear()
            held = list(self._held.values())
            if not held:
                continue
            try:
                kept = await self.store.extend_leases(
                    self.id, held, now=self.clock(), lease_s=self.config.lease_s
                )
            except StoreUnavailable as exc:
                _log.warning("worker %s: heartbeat failed: %s", self.id, exc)
                continue
            self._stop_lost([s for s in held if s.id not in kept])

    def _stop_lost(self, lost: list[StepRecord]) -> None:
        """Stop executing steps this worker no longer holds (run cancelled or timed out, or
        the lease was taken over): their results would be discarded anyway."""
        for step in lost:
            task = self._tasks.get(step.id)
            if task is None or task.done() or step.id not in self._held:
                continue  # finished meanwhile; its completion is already queued
            _log.info(
                "worker %s: stopping step %s of run %s (no longer held)",
                self.id,
                step.id,
                step.run_id,
            )
            self._lost.add(step.id)
            task.cancel()

    async def _reap_loop(self) -> None:
        while True:
            try:
                recovered, poison = await self.store.recover_expired(
                    self.id,
                    now=self.clock(),
                    max_recoveries=self.config.max_recoveries,
                    lease_s=self.config.lease_s,
                )
            except StoreUnavailable as exc:
                _log.warning("worker %s: recovery pass failed: %s", self.id, exc)
                recovered, poison = 0, []
            if recovered:
                self.stats.recovered += recovered
                self.metrics.lease_recoveries.inc(recovered)
                _log.info("worker %s re-queued %d steps whose lease expired", self.id, recovered)
                self._wake.set()
            if poison:
                await self._fail_poison(poison)
            try:
                expired = await self.store.expire_runs(now=self.clock())
            except StoreUnavailable as exc:
                _log.warning("worker %s: run deadline pass failed: %s", self.id, exc)
                expired = []
            if expired:
                self.metrics.runs_finished.labels(RunStatus.TIMED_OUT.value).inc(len(expired))
                _log.info("worker %s timed out %d runs past their deadline", self.id, len(expired))
            try:
                # Children of ended runs (a crash between a cancel and its cascade).
                orphans = await self.store.cancel_orphans(self.clock())
            except StoreUnavailable as exc:
                _log.warning("worker %s: orphan pass failed: %s", self.id, exc)
                orphans = []
            if orphans:
                self.metrics.runs_finished.labels(RunStatus.CANCELLED.value).inc(len(orphans))
            await asyncio.sleep(self.config.reap_interval_s)

    async def _fail_poison(self, poison: list[StepRecord]) -> None:
        states = await self.store.load_run_states(poison)
        for step in poison:
            state = states.get((step.run_id, step.branch))
            wf = None
            if state is not None:
                with contextlib.suppress(DefinitionError):
                    wf = await self.executor.cache.get(
                        state.run.workflow_id, state.run.workflow_version
                    )
            self._held[step.id] = step
            transition: Transition = self.executor.lost(step, state, wf)
            await self._results.put(StepCompletion(step, transition))

    # -- shutdown --------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let in-flight steps finish within the grace period, commit their results, and
        release the steps that had to be interrupted."""
        tasks = list(self._tasks.values())
        interrupted: list[StepRecord] = []
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            pending_ids = {id(task) for task in pending}
            interrupted = [
                self._held[step_id]
                for step_id, task in list(self._tasks.items())
                if id(task) in pending_ids and step_id in self._held
            ]
        await self._results.join()
        if interrupted:
            await self._release(interrupted)
            for step in interrupted:
                self._forget(step.id)

    async def _release(self, held: list[StepRecord]) -> None:
        """Give steps back to the queue unexecuted (their leases would expire otherwise)."""
        try:
            self.stats.released += await self.store.release_steps(self.id, held, self.clock())
        except StoreUnavailable as exc:
            _log.warning(
                "worker %s: could not release %d steps (leases will expire): %s",
                self.id,
                len(held),
                exc,
            )
