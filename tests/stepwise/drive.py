"""A manual, deterministic driver for races and orderings: claim, execute and complete steps one by
one (in an order the test chooses), under a FakeClock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from flowyard.bootstrap import Container
from flowyard.domain.commands import Transition
from flowyard.domain.ids import RunId
from flowyard.domain.records import RunRecord, StepRecord
from flowyard.settings import Settings
from flowyard.store.ports import CompletionResult, StepCompletion
from flowyard.worker.execute import StepExecutor
from support.clock import FakeClock
from support.harness import built


def graph(name: str, *nodes: dict[str, Any], start: str = "start") -> dict[str, Any]:
    return {"name": name, "start": start, "nodes": list(nodes)}


def node(node_id: str, node_type: str, next_: str | None = None, **config: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"id": node_id, "type": node_type, "config": config}
    if next_ is not None:
        spec["next"] = next_
    return spec


class Driver:
    def __init__(self, container: Container, clock: FakeClock, worker: str = "w1") -> None:
        self.c = container
        self.clock = clock
        self.worker = worker
        self.executor = StepExecutor(
            container.cache,
            container.expressions,
            container.http,
            clock=clock,
            credentials=container.credential_resolver,
            workflows=container.service,
        )

    async def start(self, definition: dict[str, Any], data: Any = None) -> RunRecord:
        record, _, _ = await self.c.service.save_workflow(definition)
        run, _ = await self.c.service.start_run(record.id, data or {})
        return run

    async def claim(self, limit: int = 1000, lease_s: float = 30) -> list[StepRecord]:
        return await self.c.store.claim_steps(
            self.worker, limit=limit, now=self.clock(), lease_s=lease_s
        )

    async def execute(self, steps: Iterable[StepRecord]) -> list[StepCompletion]:
        steps = list(steps)
        if not steps:
            return []
        states = await self.c.store.load_run_states(steps, listening=self.executor.listening)
        out = []
        for s in steps:
            tr: Transition = await self.executor.execute(s, states.get((s.run_id, s.branch)))
            out.append(StepCompletion(s, tr))
        return out

    async def complete(self, completions: list[StepCompletion]) -> CompletionResult:
        return await self.c.store.complete_steps(completions, self.clock())

    async def tick(self) -> list[StepRecord]:
        """Claim what is due, execute and complete it (one batch)."""
        claimed = await self.claim()
        await self.complete(await self.execute(claimed))
        return claimed

    async def idle(self, rounds: int = 50) -> None:
        """Tick until nothing is due."""
        for _ in range(rounds):
            if not await self.tick():
                return
        raise AssertionError("still busy after many rounds")

    async def steps(self, run_id: RunId) -> list[StepRecord]:
        return await self.c.store.list_steps(run_id)

    async def by_node(self, run_id: RunId) -> dict[str, StepRecord]:
        return {s.node_id: s for s in await self.steps(run_id)}


@asynccontextmanager
async def driven(settings: Settings) -> AsyncIterator[Driver]:
    clock = FakeClock()
    async with built(settings, clock) as container:
        yield Driver(container, clock)
