"""Priorities and fair shares in the claim, on SQLite and PostgreSQL (decision 0032): an
interactive step is claimed before a campaign's older backlog, two campaigns started
together share the claims by their weights (counts, not times), and every new step row
(next steps, map branches, child runs) inherits its run's priority and lane."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from campaigns.test_campaign_store import items, new_campaign
from contract.helpers import T0, at, claim, complete, make_workflow, start, step_to, succeeded
from flowyard.domain.commands import BranchStart, ChildRun, Fork, JoinPolicy, Transition, Wait
from flowyard.domain.priorities import BULK, INTERACTIVE, NO_LANE
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store import Store


async def test_interactive_steps_are_claimed_before_an_older_campaign_backlog(
    store: Store,
) -> None:
    wf = await make_workflow(store)
    campaign, _ = await store.start_campaign(new_campaign(wf, 300), items(300, 100), T0)
    [run] = await start(store, wf, now=at(5))  # newer than the whole backlog
    first = await claim(store, now=at(6), limit=1)
    assert [s.run_id for s in first] == [run.id]
    assert (first[0].priority, first[0].lane) == (INTERACTIVE, NO_LANE)
    rest = await claim(store, now=at(6), limit=10)
    assert {(s.priority, s.lane) for s in rest} == {(BULK, campaign.id)}
    # A step that is not due yet does not hold its lane up: the campaign's due steps come.
    await complete(store, first[0], succeeded(next_steps=[step_to("later", at_=at(60))]))
    more = await claim(store, now=at(7), limit=5)
    assert len(more) == 5 and {s.lane for s in more} == {campaign.id}


async def test_two_campaigns_share_the_claims_by_their_weights(store: Store) -> None:
    wf = await make_workflow(store)
    a, _ = await store.start_campaign(replace(new_campaign(wf, 400, name="a")), items(400), T0)
    b, _ = await store.start_campaign(
        replace(new_campaign(wf, 400, name="b"), weight=3), items(400), T0
    )
    assert (a.weight, b.weight, b.priority) == (1, 3, BULK)
    served: Counter[str] = Counter()
    for i in range(40):  # 320 of the 800 steps, claims of 8 from two "workers"
        for step in await claim(store, now=at(1), limit=8, worker=f"w{i % 2}"):
            served[step.lane] += 1
    assert served[a.id] + served[b.id] == 320
    # 1:3 within one claim's batch: a is served all along, b three times as much.
    assert 80 - 8 <= served[a.id] <= 80 + 8, served
    # The runs started in that proportion too (the counters saw it).
    got_a = await store.get_campaign(a.id, now=at(2))
    got_b = await store.get_campaign(b.id, now=at(2))
    assert got_a.counts[RunStatus.RUNNING] == served[a.id]
    assert got_b.counts[RunStatus.RUNNING] == served[b.id]


async def test_new_steps_inherit_the_run_priority_and_lane(store: Store) -> None:
    wf = await make_workflow(store)
    campaign, _ = await store.start_campaign(new_campaign(wf, 1), items(1), T0)
    [first] = await claim(store, now=at(1))
    assert (first.priority, first.lane) == (BULK, campaign.id)
    # A next step (from the completion batch) ...
    [run] = await start(store, wf, now=at(1))
    [plain] = await claim(store, now=at(1))
    await complete(store, plain, succeeded(next_steps=[step_to("next")]))
    [nxt] = await claim(store, now=at(1))
    assert (nxt.run_id, nxt.priority, nxt.lane) == (run.id, INTERACTIVE, NO_LANE)
    # ... map branches and child runs of a campaign's run stay in its lane.
    fork = Fork(
        (BranchStart("0", "start", "noop", 0), BranchStart("1", "start", "noop", 1)),
        JoinPolicy(),
        kind="map",
    )
    await complete(
        store, first, Transition(StepStatus.WAITING, wait=Wait(None, "branches"), fork=fork)
    )
    claimed = await claim(store, now=at(2))
    assert claimed and {(s.priority, s.lane) for s in claimed} == {(BULK, campaign.id)}
    child = ChildRun(wf.id, wf.latest_version, "start", "noop", {"x": 1})
    branch = next(s for s in claimed if s.branch)
    await complete(
        store, branch, Transition(StepStatus.WAITING, wait=Wait(None, "child"), child=child)
    )
    children = await claim(store, now=at(3))
    kids = [s for s in children if s.run_id != first.run_id]
    assert kids and {(s.priority, s.lane) for s in kids} == {(BULK, campaign.id)}
    kid_run = await store.get_run(kids[0].run_id)
    assert (kid_run.priority, kid_run.lane) == (BULK, campaign.id)
