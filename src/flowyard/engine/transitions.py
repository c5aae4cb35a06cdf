"""Pure decisions: a step's result -> what the store must record and schedule next."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from flowyard.domain.commands import NextStep, Transition
from flowyard.domain.errors import ErrorInfo
from flowyard.domain.events import EventType
from flowyard.domain.statuses import StepStatus
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.retry import backoff_delay, matches_any, may_retry
from flowyard.nodes.base import NodeOutcome


def _schedule(
    wf: CompiledWorkflow, target: str, iterations: Mapping[str, int], now: datetime
) -> NextStep | ErrorInfo:
    node = wf.node(target)
    iteration = iterations.get(target, -1) + 1 if node.in_cycle else 0
    guard = node.spec.max_iterations
    if guard is not None and iteration >= guard:
        return ErrorInfo(
            "loop.max_iterations",
            f"node {target!r} would run a {iteration + 1}th time; max_iterations is {guard}",
            transient=False,
            details={"node_id": target, "max_iterations": guard},
        )
    return NextStep(target, node.spec.type, iteration, now)


def on_success(
    wf: CompiledWorkflow,
    node_id: str,
    outcome: NodeOutcome,
    *,
    iterations: Mapping[str, int],
    now: datetime,
) -> Transition:
    """Decide what follows a successful step (or a step that parks itself)."""
    node = wf.node(node_id)
    if outcome.wait is not None:
        return _park(wf, node_id, outcome)
    target = outcome.next if outcome.next is not None else node.spec.next
    event = (EventType.STEP_SUCCEEDED, {"node_id": node_id, "next": target})
    if outcome.end or target is None:
        return Transition(
            StepStatus.SUCCEEDED,
            output=outcome.output,
            path_ended=True,
            run_output=outcome.output,
            event=event,
            consume_signal=outcome.consume_signal,
        )
    if target not in wf.nodes:
        # Only a node type that returns an undeclared target can get here; validation
        # checks declared routes.
        error = ErrorInfo(
            "engine.unknown_target", f"node {node_id!r} routed to unknown node {target!r}", False
        )
        return Transition(StepStatus.SUCCEEDED, output=outcome.output, fail_run=error, event=event)
    scheduled = _schedule(wf, target, iterations, now)
    if isinstance(scheduled, ErrorInfo):
        return Transition(
            StepStatus.SUCCEEDED, output=outcome.output, fail_run=scheduled, event=event
        )
    return Transition(
        StepStatus.SUCCEEDED,
        output=outcome.output,
        next_steps=(scheduled,),
        event=event,
        consume_signal=outcome.consume_signal,
    )


def _park(wf: CompiledWorkflow, node_id: str, outcome: NodeOutcome) -> Transition:
    """A step that waits (a timer, a signal, its branches or a child run)."""
    wait = outcome.wait
    assert wait is not None
    fork = outcome.fork
    if fork is not None:  # branch starts get their node types from the definition
        fork = replace(
            fork,
            branches=tuple(
                replace(b, start_type=wf.node(b.start_node).spec.type) for b in fork.branches
            ),
        )
    data: dict[str, object] = {"node_id": node_id, "on": wait.on}
    if wait.until is not None:
        data["until"] = wait.until.isoformat()
    if outcome.fork is not None:
        data["branches"] = len(outcome.fork.branches)
    if outcome.child is not None:
        data["workflow_id"] = outcome.child.workflow_id
        data["workflow_version"] = outcome.child.workflow_version
    return Transition(
        StepStatus.WAITING,
        wait=wait,
        fork=fork,
        child=outcome.child,
        consume_signal=outcome.consume_signal,
        event=(EventType.STEP_WAITING, data),
    )


def on_failure(
    wf: CompiledWorkflow,
    node_id: str,
    error: ErrorInfo,
    *,
    attempt: int,
    iterations: Mapping[str, int],
    now: datetime,
    rand: Callable[[], float],
) -> Transition:
    """Decide what follows a failed attempt: retry later, take a catch route, or fail the run."""
    node = wf.node(node_id)
    if may_retry(node.retry, error, attempt):
        retry_after = error.details.get("retry_after_s")
        delay = backoff_delay(
            node.retry,
            attempt,
            retry_after_s=float(retry_after) if isinstance(retry_after, int | float) else None,
            rand=rand,
        )
        retry_at = now + timedelta(seconds=delay)
        return Transition(
            StepStatus.RETRYING,
            error=error,
            retry_at=retry_at,
            event=(
                EventType.STEP_RETRYING,
                {
                    "node_id": node_id,
                    "attempt": attempt,
                    "error": error.as_dict(),
                    "delay_s": round(delay, 3),
                    "retry_at": retry_at.isoformat(),
                },
            ),
        )
    failed_event = (
        EventType.STEP_FAILED,
        {"node_id": node_id, "attempt": attempt, "error": error.as_dict()},
    )
    for rule in node.catch:
        if matches_any(error.type, rule.errors):
            scheduled = _schedule(wf, rule.next, iterations, now)
            if isinstance(scheduled, ErrorInfo):
                return Transition(
                    StepStatus.FAILED, error=error, fail_run=scheduled, event=failed_event
                )
            return Transition(
                StepStatus.FAILED,
                error=error,
                next_steps=(scheduled,),
                event=failed_event,
                extra_events=((EventType.STEP_CAUGHT, {"node_id": node_id, "next": rule.next}),),
            )
    return Transition(StepStatus.FAILED, error=error, fail_run=error, event=failed_event)


def first_step(wf: CompiledWorkflow, now: datetime) -> NextStep:
    """The step every run starts with."""
    return NextStep(wf.start.id, wf.start.spec.type, 0, now)
