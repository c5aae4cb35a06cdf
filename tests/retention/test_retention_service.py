"""Retention policies with real workers under a fake clock, on SQLite and PostgreSQL: a
workflow's own ``retention`` wins over the global one (``forever`` keeps its runs), a run
that has not finished is never pruned however old, a sub-workflow's child runs go with their
parent and never before it, and the periodic pruner runs once per interval across pruners."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from flowyard.bootstrap import Container, build
from flowyard.domain.errors import InvalidInput, NotFound
from flowyard.domain.records import RunRecord
from flowyard.domain.statuses import RunStatus
from flowyard.service.retention import Pruner, RetentionService
from flowyard.settings import Settings
from retention.test_prune_store import rows_naming
from support.clock import FakeClock
from support.harness import built, eventually, working


def flow(name: str, *middle: dict[str, Any], retention: str | None = None) -> dict[str, Any]:
    """trigger -> middle nodes in a row -> end."""
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "trigger"}]
    nodes += [dict(node) for node in middle]
    nodes.append({"id": "done", "type": "end"})
    for node, following in itertools.pairwise(nodes):
        node["next"] = following["id"]
    definition: dict[str, Any] = {"name": name, "start": "start", "nodes": nodes}
    if retention is not None:
        definition["retention"] = retention
    return definition


WAIT = {"id": "wait", "type": "wait_for_signal", "config": {"signal": "go"}}


def sub(workflow: str) -> dict[str, Any]:
    return {"id": "call", "type": "subworkflow", "config": {"workflow": workflow}}


async def start(container: Container, definition: dict[str, Any], count: int = 1) -> list[str]:
    record, _, _ = await container.service.save_workflow(definition)
    return [(await container.service.start_run(record.id, {"i": i}))[0].id for i in range(count)]


async def settle(container: Container, run_ids: list[str]) -> dict[str, RunRecord]:
    """Wait until every run has ended or waits."""

    async def check() -> dict[str, RunRecord] | None:
        found = {r: await container.store.get_run(r) for r in run_ids}
        still = [r for r in found.values() if r.status in (RunStatus.PENDING, RunStatus.RUNNING)]
        return None if still else found

    return await eventually(check, f"{len(run_ids)} runs to end or wait")


async def existing(container: Container, run_ids: list[str]) -> set[str]:
    kept = set()
    for run_id in run_ids:
        try:
            await container.store.get_run(run_id)
        except NotFound:
            continue
        kept.add(run_id)
    return kept


async def test_policies_unfinished_runs_and_child_runs(settings: Settings, db_url: str) -> None:
    clock = FakeClock()
    async with built(settings, clock, retention="1d", pruner=False) as container:
        hourly = await start(container, flow("hourly", retention="1h"), 2)
        daily = await start(container, flow("daily"), 2)  # the global 1d
        kept = await start(container, flow("kept", retention="forever"), 1)
        waiting = await start(container, flow("waiter", WAIT, retention="1s"), 1)
        await start(container, flow("child", retention="1s"), 0)
        parent = await start(container, flow("parent", sub("child"), WAIT, retention="1h"), 1)
        async with working(container):
            ended = await settle(container, hourly + daily + kept + waiting + parent)
        assert ended[waiting[0]].status == RunStatus.WAITING
        assert ended[parent[0]].status == RunStatus.WAITING
        children = [r.id for r in await container.store.list_runs(limit=50) if r.parent_run_id]
        assert len(children) == 1
        assert (await container.store.get_run(children[0])).status == RunStatus.SUCCEEDED
        everything = hourly + daily + kept + waiting + parent + children

        clock.advance(2 * 3600)
        report = await container.retention.prune()
        assert report.runs_by_workflow == {"hourly": 2} and report.counts["runs"] == 2
        assert await existing(container, everything) == set(everything) - set(hourly)
        assert set((await rows_naming(db_url, hourly)).values()) == {0}

        clock.advance(3 * 86400)
        report = await container.retention.prune()
        assert report.runs_by_workflow == {"daily": 2}
        # Unfinished however old; a child waits for its parent whatever its own policy.
        assert await existing(container, everything) == set(kept + waiting + parent + children)

        for run_id in waiting + parent:
            await container.service.send_signal(run_id, "go", {})
        async with working(container):
            await eventually(
                lambda: _all_ended(container, waiting + parent), "the waiting runs to end"
            )
        clock.advance(2 * 3600)
        report = await container.retention.prune()
        assert report.runs_by_workflow == {"waiter": 1, "parent": 2}  # the child with it
        assert await existing(container, everything) == set(kept)
        gone = [r for r in everything if r not in kept]
        assert set((await rows_naming(db_url, gone)).values()) == {0}
        pruned = container.metrics.registry.get_sample_value(
            "flowyard_runs_pruned_total", {"workflow": "parent"}
        )
        assert pruned == 2


async def _all_ended(container: Container, run_ids: list[str]) -> bool:
    statuses = [(await container.store.get_run(r)).status for r in run_ids]
    return all(status.is_terminal for status in statuses)


async def test_older_than_overrides_every_policy_and_bad_input_is_refused(
    settings: Settings,
) -> None:
    clock = FakeClock()
    async with built(settings, clock, pruner=False) as container:
        runs = await start(container, flow("kept", retention="forever"), 3)
        other = await start(container, flow("other"), 1)
        async with working(container):
            await settle(container, runs + other)
        clock.advance(60)
        assert (await container.retention.prune()).runs == 0  # forever, and global forever
        dry = await container.retention.prune(older_than="30s", workflow="kept", dry_run=True)
        assert dry.dry_run and dry.runs == 3 and dry.counts["steps"] == 6
        assert await existing(container, runs) == set(runs)
        report = await container.retention.prune(older_than="30s", workflow="kept")
        assert report.runs == 3 and await existing(container, runs + other) == set(other)
        with pytest.raises(InvalidInput, match="--older-than"):
            await container.retention.prune(older_than="soon")
        with pytest.raises(InvalidInput, match="not 'forever'"):
            await container.retention.prune(older_than="forever")
        with pytest.raises(NotFound):
            await container.retention.prune(older_than="1s", workflow="no-such-flow")


async def test_the_periodic_pruner_runs_once_per_interval_across_processes(
    settings: Settings,
) -> None:
    clock = FakeClock()
    async with built(settings, clock, retention="1h", pruner=False) as container:
        runs = await start(container, flow("daily"), 2)
        async with working(container):
            await settle(container, runs)
        clock.advance(2 * 3600)

        def pruner(owner: str) -> Pruner:
            return Pruner(
                container.retention, container.store, owner=owner, interval_s=600, clock=clock
            )

        first, second = pruner("process-a"), pruner("process-b")
        report = await first.run_once()
        assert report is not None and report.runs == 2
        assert await second.run_once() is None  # not due: the first pass was just now
        assert await first.run_once() is None  # nor for the one that ran it
        clock.advance(601)
        again = await second.run_once()
        assert again is not None and again.runs == 0
        entries = await container.store.list_audit(action="retention.prune")
        assert [e.actor for e in entries] == ["pruner:process-a"]


async def test_a_bad_global_retention_is_one_clear_error(settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="FLOWYARD_RETENTION"):
        await build(settings.model_copy(update={"retention": "a month"}))


async def test_the_first_worker_brings_a_pruner_along(settings: Settings) -> None:
    """With ``FLOWYARD_PRUNER`` (on by default) the first worker of a process prunes every
    ``prune_interval_s``: runs past a workflow's retention disappear while it works."""
    overrides = {"prune_interval_s": 1.0, "shutdown_grace_s": 2.0}
    container = await build(settings.model_copy(update=overrides))
    try:
        runs = await start(container, flow("brief", retention="1s"), 3)
        async with working(container):
            await eventually(
                lambda: _gone(container, runs), "the pruner to delete the runs", within=30
            )
        assert len(container.workers) == 1
    finally:
        await container.close()


async def _gone(container: Container, run_ids: list[str]) -> bool:
    return not await existing(container, run_ids)


class StolenAfterFirstBatch:
    """The test's store, where another process takes the prune lease (expired: the clock
    jumps past it) right after the first batch commits."""

    def __init__(self, store: Any, clock: FakeClock) -> None:
        self._store = store
        self._clock = clock
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def prune_runs(self, *args: Any, **kwargs: Any) -> Any:
        batch = await self._store.prune_runs(*args, **kwargs)
        self.batches += 1
        if self.batches == 1:
            now = self._clock.advance(61)
            until = now + timedelta(seconds=60)
            assert await self._store.take_lease("prune", "thief", now=now, until=until)
        return batch


async def test_a_pruner_that_lost_its_lease_stops_between_batches(settings: Settings) -> None:
    clock = FakeClock()
    async with built(settings, clock, pruner=False) as container:
        runs = await start(container, flow("daily", retention="1s"), 3)
        async with working(container):
            await settle(container, runs)
        clock.advance(10)
        store = StolenAfterFirstBatch(container.store, clock)
        service = RetentionService(store, clock=clock, metrics=container.metrics, batch=1)
        pruner = Pruner(service, store, owner="slow", interval_s=600, clock=clock)
        report = await pruner.run_once()
        assert report is not None and report.interrupted and report.runs == 1
        assert len(await existing(container, runs)) == 2
        # The thief holds it: the slow pruner's release changed nothing.
        assert not await container.store.take_lease("prune", "slow", now=clock(), until=clock())
