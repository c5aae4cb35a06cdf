"""take_action checks the action against the run's state (the target of its last move) and
records the move only if that is still the last one: if another action moved the run in
between, the first is refused (409), never applied to the new state, where it may not be
allowed at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowyard.domain.errors import Conflict
from flowyard.settings import Settings
from stepwise.drive import driven

SAMPLE = json.loads(
    (Path(__file__).parents[2] / "examples" / "approval_state_machine.json").read_text()
)
DOC = {"document": "q3-budget.pdf", "author": "ada"}


class Interleave:
    """The store, but between take_action's checks and its compare-and-set (the store's
    record_action) another actor's action is taken."""

    def __init__(self, store: Any, other: Any) -> None:
        self._store = store
        self.other = other

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def record_action(self, *args: Any, **kw: Any) -> Any:
        if self.other is not None:
            other, self.other = self.other, None
            await other()
        return await self._store.record_action(*args, **kw)


@pytest.mark.parametrize("settled", [True, False], ids=["new-state-waits", "moving"])
async def test_an_action_checked_against_one_state_is_not_applied_to_another(
    settings: Settings, settled: bool
) -> None:
    """settled: a worker has followed the other action (the run waits in its target state);
    not settled: the other action is only recorded. Either way 'approve' is refused."""
    async with driven(settings) as d:
        run = await d.start(SAMPLE, DOC)
        await d.idle()
        await d.c.service.take_action(run.id, "submit", actor="user:ada")
        await d.idle()  # notify_reviewers, then it waits in pending_review
        assert (await d.c.service.run_actions(run.id)).where.state == "pending_review"
        service = d.c.service
        real = service.store

        async def request_changes() -> None:
            service.store = real
            try:
                await service.take_action(run.id, "request_changes", actor="user:bob")
                if settled:
                    await d.idle()  # a worker parks the run in changes_requested
            finally:
                service.store = probe

        probe = Interleave(real, request_changes)
        service.store = probe
        try:
            # 'approve' is allowed from pending_review, not from changes_requested.
            with pytest.raises(Conflict):
                await service.take_action(run.id, "approve", actor="user:eve")
        finally:
            service.store = real
        await d.idle()
        view = await service.run_actions(run.id)
        assert view.where.state == "changes_requested", (
            f"'approve' moved the run from changes_requested to {view.where}"
        )
