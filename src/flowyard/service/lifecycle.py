"""Lifecycle use cases: cancel, pause, resume, retry (one run or by filter), signals."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flowyard.domain.auth import AuditEntry
from flowyard.domain.commands import SIGNAL_NAME_PATTERN, RetryFrom
from flowyard.domain.errors import (
    Conflict,
    FlowyardError,
    InvalidInput,
    Problem,
)
from flowyard.domain.records import (
    RunRecord,
    SignalRecord,
)
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.engine.restart import retry_start
from flowyard.service.runs import RunUseCases, run_deadline

SIGNAL_NAME = re.compile(SIGNAL_NAME_PATTERN)


def check_signal_name(name: str) -> None:
    """InvalidInput unless ``name`` is a signal name one may send (not ``@action``)."""
    if not SIGNAL_NAME.match(name):
        raise InvalidInput(
            f"{name[:100]!r} is not a signal name",
            [Problem("/name", f"a signal name matches {SIGNAL_NAME.pattern}", "pattern")],
        )


@dataclass(slots=True)
class BulkRetry:
    """Outcome of retrying runs by filter."""

    matched: int
    retried: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class LifecycleUseCases(RunUseCases):
    """Operator actions on runs."""

    async def cancel_run(
        self,
        run_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        audit: AuditEntry | None = None,
    ) -> RunRecord:
        """Cancel an unfinished run; running steps are stopped at their next heartbeat."""
        run = await self.store.cancel_run(
            run_id, actor=actor, reason=reason, now=self.clock(), audit=audit
        )
        if self.metrics is not None:
            # Runs that end in a worker are counted by the worker that commits their end.
            self.metrics.runs_finished.labels(RunStatus.CANCELLED.value).inc()
        await self.cancel_orphans()
        if self.on_stop_requested is not None:
            self.on_stop_requested()
        return run

    async def cancel_orphans(self) -> int:
        """Cancel child runs whose parent ended (and their children, level by level)."""
        total = 0
        while cancelled := await self.store.cancel_orphans(self.clock()):
            total += len(cancelled)
            if self.metrics is not None:
                self.metrics.runs_finished.labels(RunStatus.CANCELLED.value).inc(len(cancelled))
        if total and self.on_stop_requested is not None:
            self.on_stop_requested()
        return total

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: Any,
        *,
        actor: str | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[SignalRecord, bool]:
        """Deliver a signal to a run: a step waiting for it wakes now; otherwise it is
        buffered until the run gets to one. A finished run refuses it (Conflict); a name
        that is not a signal name (``@action`` is how actions are recorded), or one the
        run's workflow version does not declare when it declares its signals, is
        InvalidInput."""
        check_signal_name(name)
        return await self._deliver_signal(
            await self.store.get_run(run_id), name, payload, actor=actor, audit=audit
        )

    async def _deliver_signal(
        self,
        run: RunRecord,
        name: str,
        payload: Any,
        *,
        actor: str | None,
        audit: AuditEntry | None,
    ) -> tuple[SignalRecord, bool]:
        """Deliver a (well-formed) signal name the run's version accepts (InvalidInput when
        it declares its signals and not this one)."""
        wf = await self.compiled(run.workflow_id, run.workflow_version)
        declared = wf.definition.signals
        if declared is not None and name not in declared:
            accepted = ", ".join(repr(n) for n in declared) or "none"
            raise InvalidInput(
                f"workflow {wf.definition.name!r} does not accept the signal {name!r}",
                [Problem("/name", f"the signals it declares: {accepted}", "undeclared_signal")],
            )
        signal, woke = await self.store.send_signal(
            run.id, name, payload, actor=actor, now=self.clock(), audit=audit
        )
        if woke:
            self._enqueued()
        return signal, woke

    async def pause_run(
        self, run_id: str, *, actor: str | None = None, audit: AuditEntry | None = None
    ) -> RunRecord:
        """Pause a run: no new step starts until it is resumed; timers keep their deadlines."""
        return await self.store.pause_run(run_id, actor=actor, now=self.clock(), audit=audit)

    async def resume_run(
        self, run_id: str, *, actor: str | None = None, audit: AuditEntry | None = None
    ) -> RunRecord:
        """Resume a paused run."""
        run = await self.store.resume_run(run_id, actor=actor, now=self.clock(), audit=audit)
        self._enqueued()
        return run

    async def retry_run(
        self,
        run_id: str,
        *,
        actor: str | None = None,
        use_latest_definition: bool = False,
        audit: AuditEntry | None = None,
    ) -> RunRecord:
        """Re-run a failed, timed-out or cancelled run from its failed step, keeping the
        outputs of the steps that succeeded. A run that failed in a ``fail`` node reached by
        a ``catch`` route restarts from the caught step instead, and the error branch's
        steps are discarded (:func:`flowyard.engine.restart.retry_start`). A run timeout
        starts afresh. With ``use_latest_definition`` the run moves to its workflow's latest
        version first (Conflict when a node it must run again is not in that version)."""
        run = await self.store.get_run(run_id)
        steps = await self.store.list_steps(run.id)
        start = retry_start(run.error, steps) if run.status == RunStatus.FAILED else None
        restart = (
            RetryFrom(start.step.id, start.failed_step, start.discard)
            if start is not None and start.caught
            else None
        )
        version = run.workflow_version
        if use_latest_definition:
            version = (await self.store.get_workflow(run.workflow_id)).latest_version
        wf = await self.cache.get(run.workflow_id, version)
        if version != run.workflow_version:
            failed = (
                start.step.node_id
                if start is not None
                else (run.error or {}).get("details", {}).get("node_id")
            )
            dropped = set(start.discard) if start is not None else set()
            again = {
                s.node_id
                for s in steps
                if not s.branch and s.status == StepStatus.CANCELLED and s.id not in dropped
            }
            missing = sorted(
                n for n in again | ({failed} if failed else set()) if n not in wf.nodes
            )
            if missing:
                raise Conflict(
                    f"version {version} of the workflow has no node {missing[0]!r}, which "
                    f"run {run_id} must run again; retry it on its own version",
                    detail={"missing_nodes": missing, "version": version},
                )
        now = self.clock()
        retried = await self.store.retry_run(
            run_id,
            actor=actor,
            now=now,
            deadline_at=run_deadline(wf, now),
            workflow_version=version,
            restart=restart,
            audit=audit,
        )
        self._enqueued()
        return retried

    async def retry_failed(
        self,
        *,
        workflow: str | None = None,
        error_type: str | None = None,
        status: RunStatus = RunStatus.FAILED,
        limit: int = 100,
        actor: str | None = None,
        audit: AuditEntry | None = None,
    ) -> BulkRetry:
        """Retry every run matching the filter (the dead-letter queue), up to ``limit``.
        ``audit`` is written with the first retry that commits."""
        if status not in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED):
            raise InvalidInput(
                "only failed, timed_out or cancelled runs can be retried",
                [Problem("/status", f"{status.value} is not retryable", "status")],
            )
        matched = await self.list_runs(
            status=status, workflow=workflow, error_type=error_type, limit=limit
        )
        result = BulkRetry(matched=len(matched))
        for run in matched:
            try:
                await self.retry_run(run.id, actor=actor, audit=audit)
            except FlowyardError as exc:
                result.skipped.append({"run_id": run.id, "reason": exc.message})
            else:
                result.retried.append(run.id)
        return result
