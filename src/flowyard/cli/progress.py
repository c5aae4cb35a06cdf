"""What ``flowyard run --wait`` shows: each step attempt as it finishes, then the run's
status and, when it failed, the step that caused it (not only the ``fail`` node)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from rich.console import Console
from rich.text import Text

from flowyard.bootstrap import Container
from flowyard.cli.common import fail
from flowyard.domain.records import RunRecord, StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.service import RunDetail

#: Step statuses worth a line: an attempt ended, or the step parked.
_SHOWN = {
    StepStatus.SUCCEEDED: ("✓", "green"),
    StepStatus.RETRYING: ("↻", "yellow"),
    StepStatus.WAITING: ("…", "cyan"),
    StepStatus.FAILED: ("✗", "red"),
    StepStatus.CANCELLED: ("-", "dim"),
}
#: Error messages are cut to this many characters in a progress line.
_MESSAGE_CHARS = 300


def error_text(error: dict[str, Any] | None) -> str:
    """``type: message`` of a stored error, on one line."""
    if not error:
        return ""
    message = " ".join(str(error.get("message") or "").split())
    if len(message) > _MESSAGE_CHARS:
        message = message[: _MESSAGE_CHARS - 1] + "…"
    kind = error.get("type") or "error"
    return f"{kind}: {message}" if message else str(kind)


class StepReporter:
    """Prints one line per step attempt that ended (or parked), once, in step order."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._seen: dict[int, tuple[StepStatus, int]] = {}

    def update(self, steps: list[StepRecord]) -> None:
        """Print the steps whose status or attempt changed since the last call."""
        for step in sorted(steps, key=lambda s: s.id):
            shown = _SHOWN.get(step.status)
            state = (step.status, step.attempt)
            if shown is None or self._seen.get(step.id) == state:
                continue
            self._seen[step.id] = state
            mark, style = shown
            line = Text(f"  {mark} ", style=style)
            name = f"{step.branch}/{step.node_id}" if step.branch else step.node_id
            line.append(f"{name:<24} ", style="bold")
            line.append(f"{step.status.value:<9} ", style=style)
            line.append(f"attempt {max(step.attempt, 1)}")
            if step.status == StepStatus.WAITING and step.waiting_for:
                line.append(f"  on {step.waiting_for}", style="dim")
            elif step.error and step.status != StepStatus.SUCCEEDED:
                line.append(f"  {error_text(step.error)}")
            self.console.print(line, highlight=False, soft_wrap=True)


def print_summary(console: Console, detail: RunDetail, retry_hint: str) -> None:
    """The run's final status; for a failed run its error and the cause's step and error."""
    run: RunRecord = detail.run
    status = Text(f"run {run.id} {run.status.value}", style="bold")
    if run.status == RunStatus.SUCCEEDED:
        status.stylize("green")
        console.print(status, highlight=False)
        if run.output is not None:
            console.print("output: " + json.dumps(run.output), highlight=False, markup=False)
        return
    status.stylize("red")
    if run.error:
        status.append(f": {error_text(run.error)}", style="")
    console.print(status, highlight=False, soft_wrap=True)
    cause = detail.cause
    failing = (run.error or {}).get("details", {}).get("step_id")
    if cause is not None:
        where = f"{cause.node_id} (attempt {max(cause.attempt, 1)})"
        if cause.id != failing:
            console.print(
                f"cause: step {where} failed: {error_text(cause.error)}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        else:
            console.print(f"failed at step {where}", highlight=False, markup=False)
    if run.status in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED):
        console.print(
            f"once the cause is fixed, retry it from that step: {retry_hint}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


async def wait_for(
    container: Container, run_id: str, timeout: float, reporter: StepReporter | None
) -> None:
    """Execute the run with an embedded worker until it ends, reporting its steps."""
    worker = container.new_worker()
    done = False

    async def check() -> None:
        nonlocal done
        while not done:
            done = (await container.service.get_run_record(run_id)).status.is_terminal
            if reporter is not None:
                reporter.update(await container.service.list_steps(run_id))
            if not done:
                await asyncio.sleep(0.05)

    checker = asyncio.create_task(check())
    spinner = (
        reporter.console.status(f"running {run_id}", spinner="dots")
        if reporter is not None and reporter.console.is_terminal
        else contextlib.nullcontext()
    )
    try:
        with spinner:
            await worker.run_until(lambda: done, timeout_s=timeout)
    except TimeoutError:
        fail(f"run {run_id} did not finish within {timeout:g} s (it stays in the database)")
    finally:
        checker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checker
    if reporter is not None:  # the steps that ended with the run
        reporter.update(await container.service.list_steps(run_id))
