"""The store contract for campaigns on SQLite and PostgreSQL: one transaction creates the
campaign and its runs (all or nothing), a re-post is answered by the same campaign, and the
counters the trigger keeps equal a real count whoever changes a run's status (claim,
completion, cancel, pause, resume) while runs outside campaigns leave them alone."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence

import pytest

from contract.helpers import T0, at, claim, complete, failed_run, make_workflow, start, succeeded
from flowyard.domain.campaigns import CampaignItem, CampaignLimits, CampaignStatus, NewCampaign
from flowyard.domain.errors import Conflict
from flowyard.domain.quotas import campaign_item_key
from flowyard.domain.records import WorkflowRecord
from flowyard.domain.statuses import RunStatus
from flowyard.store import Store


def new_campaign(
    wf: WorkflowRecord,
    total: int,
    *,
    name: str = "spring",
    checksum: str = "c1",
    key: str | None = None,
) -> NewCampaign:
    return NewCampaign(
        workflow_id=wf.id,
        workflow_version=wf.latest_version,
        name=name,
        start_node="start",
        start_node_type="noop",
        checksum=checksum,
        total=total,
        item_key="{{ item.email }}",
        idempotency_key=key,
        created_by="tester",
    )


def items(total: int, size: int = 4):
    def chunks() -> Iterator[Sequence[CampaignItem]]:
        rows = [
            CampaignItem(json.dumps({"email": f"u{i}@example.com", "n": i}), f"u{i}@example.com")
            for i in range(total)
        ]
        for i in range(0, total, size):
            yield rows[i : i + size]

    return chunks


async def counts_match(store: Store, campaign_id: str) -> dict[RunStatus, int]:
    campaign = await store.get_campaign(campaign_id, now=at(1))
    real = await store.count_campaign_runs(campaign_id)
    assert campaign.counts == real
    return {s: n for s, n in real.items() if n}


async def test_start_creates_the_runs_and_their_counters(store: Store) -> None:
    wf = await make_workflow(store)
    campaign, created = await store.start_campaign(new_campaign(wf, 10), items(10), T0)
    assert created and campaign.total == 10 and campaign.status == CampaignStatus.RUNNING
    assert campaign.counts[RunStatus.PENDING] == 10 and campaign.finished == 0
    page = await store.list_campaign_runs(campaign.id, limit=4)
    assert [r.input["n"] for r in page] == [0, 1, 2, 3]
    assert page[0].correlation_key == "u0@example.com" and page[0].campaign_id == campaign.id
    rest = await store.list_campaign_runs(campaign.id, after=page[-1].id, limit=100)
    assert len(rest) == 6 and rest[0].id > page[-1].id
    found = await store.list_campaign_runs(campaign.id, correlation_key="u7@example.com")
    assert [r.input["n"] for r in found] == [7]
    assert await counts_match(store, campaign.id) == {RunStatus.PENDING: 10}
    listed = await store.list_campaigns(now=at(1))
    assert [c.id for c in listed] == [campaign.id]
    assert listed[0].counts[RunStatus.PENDING] == 10


async def test_a_campaign_run_starts_with_its_row_and_first_step_and_no_event(
    store: Store,
) -> None:
    """Decision 0042: the run row says what ``run.created`` said (version, campaign, time);
    a campaign's run writes no event until its first step does."""
    wf = await make_workflow(store)
    campaign, _ = await store.start_campaign(new_campaign(wf, 3), items(3), T0)
    for run in await store.list_campaign_runs(campaign.id):
        assert await store.list_events(run.id) == []
        assert (run.workflow_version, run.campaign_id, run.created_at) == (
            wf.latest_version,
            campaign.id,
            T0,
        )
        [step] = await store.list_steps(run.id)
        assert (step.node_id, step.status.value, step.available_at) == ("start", "scheduled", T0)


async def test_items_are_stored_as_given_whatever_characters_they_hold(store: Store) -> None:
    """The spool's fields are in COPY text format: backslashes, tabs and newlines in keys
    and inputs come back as they went in, on both stores."""
    wf = await make_workflow(store)
    odd = [
        ({"s": 'back\\slash "quoted" tab\there\nline \u2028 \u00e9 \\N'}, "k\\1", "a\tb"),
        ({"s": "\\."}, "k\\N", "line\nbreak\r"),
        ({"n": 1}, "\\", "\\N"),
    ]
    given = [CampaignItem(json.dumps(v), k, c) for v, k, c in odd]
    new = dataclasses.replace(new_campaign(wf, 3), limits=CampaignLimits(key_concurrency=2))
    campaign, _ = await store.start_campaign(new, lambda: [given], T0)
    stored = await store.list_campaign_runs(campaign.id)
    assert [(r.input, r.correlation_key, r.limit_key) for r in stored] == [
        (v, k, campaign_item_key(campaign.id, c)) for v, k, c in odd
    ]


async def test_only_runs_with_a_key_hold_it_uniquely(store: Store) -> None:
    wf = await make_workflow(store)
    given = [CampaignItem('{"n": 0}', "k0"), CampaignItem('{"n": 1}', None)]
    new = dataclasses.replace(new_campaign(wf, 2), correlation_unique=True)
    campaign, _ = await store.start_campaign(new, lambda: [given], T0)
    stored = await store.list_campaign_runs(campaign.id)
    assert [(r.correlation_key, r.correlation_unique) for r in stored] == [
        ("k0", True),
        (None, False),
    ]


async def test_counters_follow_every_status_change(store: Store) -> None:
    wf = await make_workflow(store)
    campaign, _ = await store.start_campaign(new_campaign(wf, 6), items(6), T0)
    outside = await start(store, wf, 3)  # runs outside the campaign change no counter
    claimed = await claim(store, limit=100)
    assert len(claimed) == 9
    assert await counts_match(store, campaign.id) == {RunStatus.RUNNING: 6}
    mine = [s for s in claimed if s.run_id not in {r.id for r in outside}]
    assert await complete(store, mine[0], succeeded(path_ended=True), at(1))
    assert await complete(store, mine[1], failed_run(), at(1))
    for step in claimed:
        if step.run_id in {r.id for r in outside}:
            assert await complete(store, step, succeeded(path_ended=True), at(1))
    await store.cancel_run(mine[2].run_id, actor="op", reason=None, now=at(2))
    await store.pause_run(mine[3].run_id, actor="op", now=at(2))
    assert await counts_match(store, campaign.id) == {
        RunStatus.SUCCEEDED: 1,
        RunStatus.FAILED: 1,
        RunStatus.CANCELLED: 1,
        RunStatus.PAUSED: 1,
        RunStatus.RUNNING: 2,
    }
    await store.resume_run(mine[3].run_id, actor="op", now=at(3))
    await store.retry_run(mine[1].run_id, actor="op", now=at(3))
    real = await counts_match(store, campaign.id)
    assert real[RunStatus.SUCCEEDED] == 1 and RunStatus.FAILED not in real
    done = await store.get_campaign(campaign.id, now=at(1.5))
    assert done.finished == 2 and done.finished_last_minute >= 1


async def test_a_repost_is_answered_by_the_same_campaign(store: Store) -> None:
    wf = await make_workflow(store)
    first, created = await store.start_campaign(new_campaign(wf, 5), items(5), T0)
    again, created_again = await store.start_campaign(new_campaign(wf, 5), items(5), at(1))
    assert created and not created_again and again.id == first.id
    assert len(await store.list_campaign_runs(first.id, limit=100)) == 5
    with pytest.raises(Conflict, match="other items"):
        await store.start_campaign(new_campaign(wf, 5, checksum="c2"), items(5), at(2))
    keyed, _ = await store.start_campaign(new_campaign(wf, 2, name="k", key="K1"), items(2), T0)
    by_key, created_by_key = await store.start_campaign(
        new_campaign(wf, 2, name="other-name", key="K1"), items(2), at(1)
    )
    assert not created_by_key and by_key.id == keyed.id


async def test_nothing_is_started_when_an_item_fails(store: Store) -> None:
    wf = await make_workflow(store)

    def broken() -> Iterator[Sequence[CampaignItem]]:
        yield from items(8)()
        raise ValueError("line 9 is not JSON")

    with pytest.raises(ValueError, match="line 9"):
        await store.start_campaign(new_campaign(wf, 9), broken, T0)
    assert await store.list_campaigns(now=T0) == []
    assert await store.list_runs(limit=100) == []


async def test_status_is_recorded(store: Store) -> None:
    wf = await make_workflow(store)
    campaign, _ = await store.start_campaign(new_campaign(wf, 1), items(1), T0)
    paused = await store.set_campaign_status(campaign.id, CampaignStatus.PAUSED, now=at(1))
    assert paused.status == CampaignStatus.PAUSED
    assert (await store.get_campaign(campaign.id, now=at(1))).status == CampaignStatus.PAUSED
