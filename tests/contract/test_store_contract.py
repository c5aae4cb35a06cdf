"""The store contract, part 1: workflows, versions, runs and the shape of the port.

Every test runs on SQLite and on PostgreSQL through the ``store`` fixture. The queue is in
``test_store_contract_queue.py``, concurrent claiming in ``test_store_contract_concurrency.py``.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from contract.helpers import (
    T0,
    archive,
    at,
    claim,
    definition,
    event_types,
    make_workflow,
    new_run,
    start,
)
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.ids import RunId, WorkflowId
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store import Store
from flowyard.store.ports import Store as StorePort
from flowyard.store.postgres import PostgresStore
from flowyard.store.sqlite import SqliteStore

# -- workflows -----------------------------------------------------------------------------


async def test_create_workflow_makes_version_1(store: Store) -> None:
    body = definition("lead-routing", "a", "b", description="routes leads")
    wf, v1 = await store.create_workflow("lead-routing", "routes leads", body, "alice")

    assert (wf.name, wf.latest_version, wf.archived, wf.description) == (
        "lead-routing",
        1,
        False,
        "routes leads",
    )
    assert wf.id.startswith("wf_")
    assert wf.created_at.tzinfo is not None
    assert (v1.workflow_id, v1.version, v1.definition, v1.created_by) == (wf.id, 1, body, "alice")
    assert re.fullmatch(r"[0-9a-f]{64}", v1.checksum)
    assert await store.get_version(wf.id, 1) == v1
    assert await store.get_workflow(wf.id) == wf


async def test_duplicate_workflow_name_is_a_conflict(store: Store) -> None:
    first = await make_workflow(store, "dup")
    with pytest.raises(Conflict):
        await store.create_workflow("dup", None, definition("dup", "other"), None)
    assert [w.id for w in await store.list_workflows()] == [first.id]
    assert [v.version for v in await store.list_versions(first.id)] == [1]


async def test_get_workflow_by_id_and_by_name(store: Store) -> None:
    wf = await make_workflow(store, "by-ref")
    assert await store.get_workflow(wf.id) == wf
    assert await store.get_workflow("by-ref") == wf
    for missing in ("wf_00000000000000000000000000", "no-such-workflow"):
        with pytest.raises(NotFound):
            await store.get_workflow(missing)


async def test_get_workflow_by_a_name_that_looks_like_an_id(store: Store) -> None:
    # Names may start with "wf_" (WORKFLOW_NAME_PATTERN allows it); they must stay reachable.
    wf = await make_workflow(store, "wf_nightly")
    assert await store.get_workflow("wf_nightly") == wf
    assert await store.get_workflow(wf.id) == wf


async def test_list_workflows_by_name_cursor_and_archived_filter(store: Store, db_url: str) -> None:
    for name in ("charlie", "alpha", "echo", "bravo", "delta"):
        await make_workflow(store, name)

    async def names(**kwargs: Any) -> list[str]:
        return [w.name for w in await store.list_workflows(**kwargs)]

    assert await names() == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert await names(limit=2) == ["alpha", "bravo"]
    assert await names(limit=2, after="bravo") == ["charlie", "delta"]
    assert await names(limit=2, after="delta") == ["echo"]
    assert await names(after="echo") == []

    await archive(db_url, "charlie")
    assert await names() == ["alpha", "bravo", "delta", "echo"]
    assert await names(limit=2, after="bravo") == ["delta", "echo"]
    assert await names(include_archived=True) == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert (await store.get_workflow("charlie")).archived


async def test_add_version_creates_version_2(store: Store) -> None:
    wf, v1 = await store.create_workflow("flow", None, definition("flow", "a"), "alice")
    body2 = definition("flow", "a", "b")

    v2, created = await store.add_version(wf.id, body2, "bob")

    assert created
    assert (v2.workflow_id, v2.version, v2.definition, v2.created_by) == (wf.id, 2, body2, "bob")
    assert v2.checksum != v1.checksum
    assert (await store.get_workflow(wf.id)).latest_version == 2
    assert await store.get_version(wf.id, 2) == v2
    assert await store.get_version(wf.id, None) == v2
    assert await store.get_version(wf.id) == v2


async def test_identical_definition_returns_latest_without_a_new_version(store: Store) -> None:
    wf, _ = await store.create_workflow("same", None, definition("same", "a"), None)
    v2, _ = await store.add_version(wf.id, definition("same", "a", "b"), None)
    # Same content, other key order: still identical.
    reordered = dict(reversed(list(definition("same", "a", "b").items())))

    latest, created = await store.add_version(wf.id, reordered, "carol")

    assert not created
    assert latest == v2
    assert [v.version for v in await store.list_versions(wf.id)] == [2, 1]
    assert (await store.get_workflow(wf.id)).latest_version == 2


async def test_identical_to_an_older_version_is_still_a_new_version(store: Store) -> None:
    wf, v1 = await store.create_workflow("back", None, definition("back", "a"), None)
    await store.add_version(wf.id, definition("back", "a", "b"), None)

    v3, created = await store.add_version(wf.id, definition("back", "a"), None)

    assert created
    assert (v3.version, v3.checksum) == (3, v1.checksum)


async def test_archive_hides_the_workflow_until_a_new_version(store: Store) -> None:
    wf = await make_workflow(store, "retire")
    archived = await store.archive_workflow(wf.id)
    assert archived.archived
    assert [w.name for w in await store.list_workflows()] == []
    assert (await store.get_workflow("retire")).archived  # still readable
    _, created = await store.add_version(wf.id, definition("retire", "a", "b"), None)
    assert created and not (await store.get_workflow(wf.id)).archived
    with pytest.raises(NotFound):
        await store.archive_workflow(WorkflowId("wf_missing"))


async def test_stale_expected_latest_is_a_conflict(store: Store) -> None:
    wf = await make_workflow(store, "optimistic")
    await store.add_version(wf.id, definition("optimistic", "a", "b"), None, expected_latest=1)

    with pytest.raises(Conflict):
        await store.add_version(wf.id, definition("optimistic", "a", "c"), None, expected_latest=1)

    assert [v.version for v in await store.list_versions(wf.id)] == [2, 1]
    v3, created = await store.add_version(
        wf.id, definition("optimistic", "a", "c"), None, expected_latest=2
    )
    assert (v3.version, created) == (3, True)


async def test_versions_are_immutable_and_listed_newest_first(store: Store) -> None:
    body1 = definition("imm", "a")
    wf, v1 = await store.create_workflow("imm", None, body1, None)
    v2, _ = await store.add_version(wf.id, definition("imm", "a", "b"), None)
    v3, _ = await store.add_version(wf.id, definition("imm", "a", "b", "c"), None)

    assert await store.list_versions(wf.id) == [v3, v2, v1]
    assert await store.get_version(wf.id, 1) == v1
    assert (await store.get_version(wf.id, 1)).definition == definition("imm", "a")


async def test_missing_versions_and_workflows_are_not_found(store: Store) -> None:
    wf = await make_workflow(store, "lonely")
    unknown = WorkflowId("wf_00000000000000000000000000")
    with pytest.raises(NotFound):
        await store.get_version(wf.id, 2)
    with pytest.raises(NotFound):
        await store.get_version(unknown)
    with pytest.raises(NotFound):
        await store.add_version(unknown, definition("x"), None)
    assert await store.list_versions(unknown) == []


# -- runs ----------------------------------------------------------------------------------


async def test_start_runs_creates_run_first_step_and_event(store: Store) -> None:
    wf = await make_workflow(store)
    new = replace(
        new_run(wf, key="k-1", input={"email": "a@example.com"}, actor="api"),
        vars={"region": "east"},
    )

    [(run, created)] = await store.start_runs([new], T0)

    assert created
    assert run.id.startswith("run_")
    assert (run.workflow_id, run.workflow_version, run.status) == (wf.id, 1, RunStatus.PENDING)
    assert (run.input, run.vars, run.idempotency_key) == (
        {"email": "a@example.com"},
        {"region": "east"},
        "k-1",
    )
    assert (run.created_at, run.updated_at, run.started_at, run.finished_at) == (T0, T0, None, None)
    assert (run.output, run.error) == (None, None)
    assert await store.get_run(run.id) == run

    [step] = await store.list_steps(run.id)
    assert (step.node_id, step.node_type, step.branch, step.iteration) == ("start", "noop", "", 0)
    assert (step.status, step.available_at, step.created_at) == (StepStatus.SCHEDULED, T0, T0)
    assert (step.attempt, step.claims, step.recoveries) == (0, 0, 0)
    assert (step.lease_owner, step.lease_expires_at, step.started_at) == (None, None, None)

    [event] = await store.list_events(run.id)
    assert (event.type, event.actor, event.created_at, event.step_id) == (
        "run.created",
        "api",
        T0,
        None,
    )
    assert event.data == {"workflow_version": 1}


async def test_start_runs_is_all_or_nothing(store: Store) -> None:
    wf = await make_workflow(store)
    orphan = replace(new_run(wf), workflow_id=WorkflowId("wf_00000000000000000000000000"))

    with pytest.raises(NotFound, match="wf_0000"):
        await store.start_runs([new_run(wf), orphan], T0)

    assert await store.list_runs() == []
    assert await store.queue_depth() == {}


async def test_idempotency_key_returns_the_existing_run(store: Store) -> None:
    wf = await make_workflow(store)
    [(first, created)] = await store.start_runs([new_run(wf, key="once")], T0)
    assert created
    await claim(store, now=at(1))  # the run moves on; a repeat returns its current state

    [(again, created_again)] = await store.start_runs(
        [new_run(wf, key="once", input={"other": True})], at(2)
    )

    assert not created_again
    assert again.id == first.id
    assert again == await store.get_run(first.id)
    assert (again.status, again.input) == (RunStatus.RUNNING, {"n": 1})
    assert len(await store.list_runs()) == 1
    assert len(await store.list_steps(first.id)) == 1
    assert (await event_types(store, first.id)).count("run.created") == 1


async def test_same_idempotency_key_twice_in_one_batch(store: Store) -> None:
    wf = await make_workflow(store)
    results = await store.start_runs(
        [new_run(wf, key="dup"), new_run(wf, key="solo"), new_run(wf, key="dup"), new_run(wf)],
        T0,
    )

    assert [created for _, created in results] == [True, True, False, True]
    assert results[2][0].id == results[0][0].id
    assert len({run.id for run, _ in results}) == 3
    assert len(await store.list_runs()) == 3
    assert (await store.queue_depth()) == {"scheduled": 3}


async def test_runs_without_a_key_are_never_deduplicated(store: Store) -> None:
    wf = await make_workflow(store)
    results = await store.start_runs([new_run(wf), new_run(wf)], T0)
    results += await store.start_runs([new_run(wf)], T0)
    assert [created for _, created in results] == [True, True, True]
    assert len({run.id for run, _ in results}) == 3


async def test_same_key_on_another_workflow_is_another_run(store: Store) -> None:
    a = await make_workflow(store, "a")
    b = await make_workflow(store, "b")
    [(run_a, created_a)] = await store.start_runs([new_run(a, key="k")], T0)
    [(run_b, created_b)] = await store.start_runs([new_run(b, key="k")], T0)
    assert created_a
    assert created_b
    assert run_a.id != run_b.id
    assert run_b.workflow_id == b.id


async def test_get_run_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get_run("run_00000000000000000000000000")


async def test_list_runs_filters_by_status_and_workflow(store: Store) -> None:
    a = await make_workflow(store, "a")
    b = await make_workflow(store, "b")
    [a1] = await start(store, a, now=T0)
    a2, a3 = await start(store, a, 2, now=at(10))
    [b1] = await start(store, b, now=T0)
    [b2] = await start(store, b, now=at(10))
    assert {s.run_id for s in await claim(store, now=T0)} == {a1.id, b1.id}

    async def ids(**kwargs: Any) -> set[RunId]:
        return {r.id for r in await store.list_runs(**kwargs)}

    assert await ids() == {a1.id, a2.id, a3.id, b1.id, b2.id}
    assert await ids(workflow_id=a.id) == {a1.id, a2.id, a3.id}
    assert await ids(workflow_id=b.id) == {b1.id, b2.id}
    assert await ids(status=RunStatus.RUNNING) == {a1.id, b1.id}
    assert await ids(status=RunStatus.PENDING) == {a2.id, a3.id, b2.id}
    assert await ids(status=RunStatus.RUNNING, workflow_id=a.id) == {a1.id}
    assert await ids(status=RunStatus.PENDING, workflow_id=b.id) == {b2.id}
    assert await ids(status=RunStatus.SUCCEEDED, workflow_id=a.id) == set()
    assert await ids(status=RunStatus.PENDING, workflow_id=b.id, limit=1) <= {b2.id}


async def test_list_runs_pages_newest_first_with_before_cursor(store: Store) -> None:
    wf = await make_workflow(store)
    started = []
    for i in range(7):
        started += await start(store, wf, now=at(i))

    pages: list[list[RunId]] = []
    cursor: str | None = None
    while True:
        page = await store.list_runs(limit=3, before=cursor)
        if not page:
            break
        pages.append([r.id for r in page])
        cursor = page[-1].id

    assert [len(p) for p in pages] == [3, 3, 1]
    listed = [run_id for page in pages for run_id in page]
    assert listed == sorted((r.id for r in started), reverse=True)
    assert await store.list_runs(workflow_id=wf.id, limit=2, before=listed[4]) == [
        await store.get_run(listed[5]),
        await store.get_run(listed[6]),
    ]


async def test_a_batch_of_5000_runs_starts_in_one_call(store: Store) -> None:
    wf = await make_workflow(store)
    batch = [new_run(wf, key=f"customer-{i}", input={"i": i}) for i in range(5000)]

    results = await store.start_runs(batch, T0)

    assert len(results) == 5000
    assert all(created for _, created in results)
    assert len({run.id for run, _ in results}) == 5000
    assert [run.input for run, _ in results] == [{"i": i} for i in range(5000)]
    assert await store.queue_depth() == {"scheduled": 5000}
    assert len(await store.list_runs(limit=10_000)) == 5000
    sample = results[4321][0]
    assert await store.get_run(sample.id) == sample
    assert await event_types(store, sample.id) == ["run.created"]

    # Repeating the batch creates nothing and returns the same runs, in order.
    again = await store.start_runs(batch, at(1))
    assert [(run.id, created) for run, created in again] == [(run.id, False) for run, _ in results]
    assert await store.queue_depth() == {"scheduled": 5000}


async def test_datetimes_are_aware_utc_whatever_the_zone_given(store: Store) -> None:
    wf = await make_workflow(store)
    elsewhere = T0.astimezone(timezone(timedelta(hours=5, minutes=30)))
    [run] = await start(store, wf, now=elsewhere)
    [step] = await store.list_steps(run.id)
    assert run.created_at == T0
    assert run.created_at.utcoffset() == timedelta(0)
    assert step.available_at == T0
    assert step.available_at.tzinfo is not None
    # Due exactly at T0, in any zone.
    assert await claim(store, now=at(-1).astimezone(UTC)) == []
    assert len(await claim(store, now=elsewhere)) == 1


# -- the port ------------------------------------------------------------------------------


def _port_methods() -> list[str]:
    """Every method of every role port the ``Store`` union is made of."""
    return sorted(
        {
            name
            for port in StorePort.__mro__
            if port.__module__.startswith("flowyard.store.ports")
            for name, member in vars(port).items()
            if inspect.isfunction(member) and not name.startswith("_")
        }
    )


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(fn)


def test_the_port_lists_the_operations_this_suite_covers() -> None:
    assert len(_port_methods()) >= 20
    assert "dialect" in typing.get_type_hints(StorePort)


@pytest.mark.parametrize("implementation", [SqliteStore, PostgresStore])
@pytest.mark.parametrize("name", _port_methods())
def test_implementations_conform_to_the_port(implementation: type[Any], name: str) -> None:
    port_fn = getattr(StorePort, name)
    impl_fn = getattr(implementation, name, None)
    assert impl_fn is not None, f"{implementation.__name__} lacks {name}"
    assert inspect.iscoroutinefunction(impl_fn) == inspect.iscoroutinefunction(port_fn)

    port_sig, impl_sig = inspect.signature(port_fn), inspect.signature(impl_fn)
    port_params = list(port_sig.parameters.values())
    impl_params = list(impl_sig.parameters.values())
    # Same parameters, in the same order, of the same kind and default: a call that is
    # valid against the port (positional or by keyword) is valid against the implementation.
    assert [(p.name, p.kind, p.default) for p in impl_params[: len(port_params)]] == [
        (p.name, p.kind, p.default) for p in port_params
    ]
    extra = impl_params[len(port_params) :]
    assert all(
        p.default is not inspect.Parameter.empty
        or p.kind
        in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        for p in extra
    ), f"{name}: extra required parameters {extra}"
    assert _hints(impl_fn) == _hints(port_fn)


@pytest.mark.parametrize(
    ("implementation", "dialect"), [(SqliteStore, "sqlite"), (PostgresStore, "postgresql")]
)
def test_implementations_name_their_dialect(implementation: type[Any], dialect: str) -> None:
    assert implementation.dialect == dialect


async def test_store_fixture_is_a_store(store: Store) -> None:
    assert isinstance(store, SqliteStore | PostgresStore)
    assert store.dialect in ("sqlite", "postgresql")
    await store.ping()
    assert await store.schema_is_current()


async def test_naive_datetimes_are_rejected(store: Store) -> None:
    wf = await make_workflow(store)
    naive = T0.replace(tzinfo=None)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        await store.start_runs([new_run(wf)], naive)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        await store.claim_steps("w", limit=1, now=naive, lease_s=1)
    assert await store.list_runs() == []
