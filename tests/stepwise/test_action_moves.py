"""Actions take effect when recorded (issue 10): the run's state is the target of its last
move, whatever the workers are doing; state steps follow the moves afterwards, in order.
Each ordering is driven by hand, on both backends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from flowyard.domain.errors import Conflict, InvalidInput
from flowyard.domain.state_machine import ACTION_SIGNAL
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.settings import Settings
from flowyard.store import normalize_url
from flowyard.store.migrate import alembic_config
from stepwise.drive import driven, graph, node

SAMPLE = json.loads(
    (Path(__file__).parents[2] / "examples" / "approval_state_machine.json").read_text()
)
DOC = {"document": "q3-budget.pdf", "author": "ada"}


def moves(history: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(h["from"], h["action"], h["to"]) for h in history]


async def test_moves_taken_before_any_worker_ran_are_followed_in_order(
    settings: Settings,
) -> None:
    async with driven(settings) as d:
        run = await d.start(SAMPLE, DOC)
        service = d.c.service
        # No step has run: the run is in its initial state already, and moves at once.
        assert (await service.run_actions(run.id)).where.state == "draft"
        for action in ("submit", "request_changes", "submit", "approve"):
            moved = await service.take_action(run.id, action, actor="user:ada")
            assert moved.recorded is not None
        view = await service.run_actions(run.id)
        assert (view.where.state, view.where.status) == ("approved", "final")
        await d.idle()
        assert (await d.c.store.get_run(run.id)).status == RunStatus.SUCCEEDED
        steps = await d.steps(run.id)
        followed = [
            (s.node_id, s.output["action"])
            for s in sorted(steps, key=lambda s: s.id)
            if s.node_type == "state" and s.output and "action" in s.output
        ]
        assert followed == [
            ("draft", "submit"),
            ("pending_review", "request_changes"),
            ("changes_requested", "submit"),
            ("pending_review", "approve"),
        ]
        notify = [s for s in steps if s.node_id == "pending_review__notify_reviewers"]
        assert sorted(s.iteration for s in notify) == [0, 1]
        signals = await d.c.store.list_signals(run.id, name=ACTION_SIGNAL)
        assert all(s.consumed_at is not None for s in signals)


async def test_a_move_recorded_while_the_state_step_runs_wakes_it_when_it_parks(
    settings: Settings,
) -> None:
    async with driven(settings) as d:
        run = await d.start(SAMPLE, DOC)
        [draft] = await d.claim()  # the initial state has no on-enter nodes
        parked = await d.execute([draft])  # it looked: no move yet, so it will wait
        await d.c.service.take_action(run.id, "submit", actor="user:ada")
        await d.complete(parked)
        # The move came after the step looked: parking finds it and makes the step due.
        [again] = await d.claim()
        assert again.node_id == "draft"
        await d.complete(await d.execute([again]))
        await d.idle()
        view = await d.c.service.run_actions(run.id)
        assert (view.where.state, view.where.status) == ("pending_review", "waiting")
        waiting = [s for s in await d.steps(run.id) if s.status == StepStatus.WAITING]
        assert [s.node_id for s in waiting] == ["pending_review"]


async def test_concurrent_moves_are_decided_one_after_the_other(settings: Settings) -> None:
    """Both leave 'draft'; whichever is decided second sees the first one's state and is
    refused there, never applied from 'draft' as well."""
    async with driven(settings) as d:
        run = await d.start(SAMPLE, DOC)
        service = d.c.service
        results = await asyncio.gather(
            service.take_action(run.id, "submit", actor="user:ada"),
            service.take_action(run.id, "submit", actor="user:bob"),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], Conflict)
        assert "not allowed from state 'pending_review'" in str(lost[0])
        view = await service.run_actions(run.id)
        assert moves(view.history) == [("draft", "submit", "pending_review")]


async def test_paused_and_ended_runs_refuse_moves(settings: Settings) -> None:
    async with driven(settings) as d:
        run = await d.start(SAMPLE, DOC)
        await d.idle()
        service = d.c.service
        await service.pause_run(run.id, actor="user:ada")
        with pytest.raises(Conflict, match="paused"):
            await service.take_action(run.id, "submit", actor="user:ada")
        await service.resume_run(run.id, actor="user:ada")
        await service.cancel_run(run.id, actor="user:ada")
        with pytest.raises(Conflict, match="ended"):
            await service.take_action(run.id, "submit", actor="user:ada")
        assert (await service.run_actions(run.id)).history == []


CHOICE = graph(
    "choice-first",
    node("start", "trigger", "pick"),
    node("pick", "condition", cases=[{"when": "input.fast", "next": "b"}], default="a"),
    node(
        "a",
        "state",
        state="a",
        actions=[{"id": "go", "to_state": "done", "to": "done"}],
    ),
    node(
        "b",
        "state",
        state="b",
        actions=[{"id": "go", "to_state": "done", "to": "done"}],
    ),
    node("done", "state", state="done", final=True),
)


async def test_a_graph_whose_first_state_is_a_choice_is_moving_until_it_enters_one(
    settings: Settings,
) -> None:
    async with driven(settings) as d:
        run = await d.start(CHOICE, {"fast": True})
        view = await d.c.service.run_actions(run.id)
        assert (view.where.state, view.where.status) == (None, "moving")
        with pytest.raises(Conflict, match="has not entered a state"):
            await d.c.service.take_action(run.id, "go", actor="user:ada")
        await d.idle()
        assert (await d.c.service.run_actions(run.id)).where.state == "b"
        moved = await d.c.service.take_action(run.id, "go", actor="user:ada")
        assert (moved.where.state, moved.where.status) == ("done", "final")
        await d.idle()
        assert (await d.c.store.get_run(run.id)).status == RunStatus.SUCCEEDED


async def test_runs_moved_before_the_upgrade_keep_their_state_and_history(
    settings: Settings,
) -> None:
    """Migration 0008: a run moved by the previous version (moves only in its state steps'
    outputs, waiting for ``action``) keeps its state and history, and moves on."""
    async with driven(settings) as d:
        run = await d.start(SAMPLE, DOC)
        for action in ("submit", "request_changes"):
            await d.c.service.take_action(run.id, action, actor="user:ada")
            await d.idle()
        before = await d.c.service.run_actions(run.id)
        engine = create_async_engine(normalize_url(settings.db_url))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0007"))
                old = await conn.scalar(
                    sa.text(
                        "select count(*) from steps"
                        " where waiting_for = 'action' and status = 'waiting'"
                    )
                )
                assert old == 1  # as the previous version left it
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))
        finally:
            await engine.dispose()
        after = await d.c.service.run_actions(run.id)
        assert after.where == before.where
        assert (
            moves(after.history)
            == moves(before.history)
            == [
                ("draft", "submit", "pending_review"),
                ("pending_review", "request_changes", "changes_requested"),
            ]
        )
        await d.c.service.take_action(run.id, "submit", actor="user:ada")
        await d.idle()
        view = await d.c.service.run_actions(run.id)
        assert (view.where.state, view.where.status) == ("pending_review", "waiting")


async def test_no_one_can_forge_a_move_as_a_signal(settings: Settings) -> None:
    """``@action`` is reserved: a signal of that name (a forged move, which the state step
    would follow) is refused by the service, whoever calls it (API or CLI)."""
    async with driven(settings) as d:
        run = await d.start(SAMPLE, DOC)
        forged = {"from": "draft", "to": "approved", "action": "submit"}
        with pytest.raises(InvalidInput, match="not a signal name"):
            await d.c.service.send_signal(run.id, ACTION_SIGNAL, forged, actor="user:mallory")
        assert await d.c.store.list_signals(run.id) == []
