"""Rows that outlive their owners, on SQLite and PostgreSQL: a campaign's quota rows go once
its runs have all ended (kept while it runs; made again by retry-failed); a hook's or an
event trigger's debounce and throttle rows go with it; throttle windows that are over and
rows left by owners deleted earlier go with the prune. ``--dry-run`` counts them."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from campaigns.test_campaign_wakeups import in_status
from contract.helpers import make_workflow, raw_connection
from flowyard.bootstrap import Container
from flowyard.campaigns.items import ItemFormat
from flowyard.domain.campaigns import CampaignRecord
from flowyard.domain.clock import utc_now
from flowyard.domain.hooks import HookAuth, HookConfig, HookScheme, NewHook
from flowyard.domain.quotas import campaign_item_key, campaign_key
from flowyard.domain.statuses import RunStatus
from flowyard.domain.triggers import MAX_PERIOD_S, hook_source, trigger_source
from flowyard.service import LimitsSpec
from flowyard.store.schema import trigger_debounces, trigger_throttles
from support.campaigns import WAITER

FAILING = {"name": "failing", "start": "boom", "nodes": [{"id": "boom", "type": "fail"}]}
TENANTS = ("acme", "globex")


async def campaign_quotas(container: Container, campaign_id: str) -> set[str]:
    keys = [campaign_key(campaign_id), *(campaign_item_key(campaign_id, t) for t in TENANTS)]
    return {k for k in keys if await container.store.find_quota(k) is not None}


async def limited(container: Container, workflow: str, name: str) -> CampaignRecord:
    """A campaign of ``workflow`` with limits for the whole and per tenant (3 quota rows)."""
    campaign, _ = await container.service.start_campaign(
        workflow,
        name,
        ItemFormat.JSON,
        [{"tenant": t} for t in TENANTS],
        limits=LimitsSpec(concurrency=5, key_concurrency=1),
        concurrency_key="{{ item.tenant }}",
    )
    return campaign


async def test_quota_rows_of_an_ended_campaign_are_pruned_and_restored_by_a_retry(
    container: Container,
) -> None:
    for definition in (FAILING, WAITER):
        await container.service.save_workflow(definition)
    ended = await limited(container, "failing", "ends")
    running = await limited(container, "waiter", "runs")
    for run in await container.store.list_campaign_runs(ended.id):
        await in_status(container, run.id, RunStatus.FAILED)
    for run in await container.store.list_campaign_runs(running.id):
        await in_status(container, run.id, RunStatus.WAITING)
    assert len(await campaign_quotas(container, ended.id)) == 3

    dry = await container.retention.prune(dry_run=True)
    assert dry.leftovers["quotas"] == 3 and dry.runs == 0
    assert len(await campaign_quotas(container, ended.id)) == 3  # counted, not deleted
    report = await container.retention.prune()
    assert report.leftovers["quotas"] == 3
    assert await campaign_quotas(container, ended.id) == set()
    assert len(await campaign_quotas(container, running.id)) == 3  # still running: kept
    # The campaign keeps its limits; its runs come back under them.
    shown = await container.service.get_campaign(ended.id)
    assert (shown.limits.concurrency, shown.limits.key_concurrency) == (5, 1)
    await container.service.campaign_action(ended.id, "retry-failed", actor="user:ada")
    assert len(await campaign_quotas(container, ended.id)) == 3
    again = await container.retention.prune(dry_run=True)
    assert again.leftovers["quotas"] == 0  # its runs are pending again

    # A cancelled campaign's rows go once its runs have all ended (cancelled).
    await container.service.campaign_action(running.id, "cancel", actor="user:ada")
    assert (await container.retention.prune()).leftovers["quotas"] == 3
    assert await campaign_quotas(container, running.id) == set()


async def trigger_rows(container: Container, source: str) -> tuple[int, int]:
    """(debounce rows, throttle rows) of ``source``."""
    async with raw_connection(container.settings.db_url) as conn:
        debounces = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(trigger_debounces)
            .where(trigger_debounces.c.source == source)
        )
        throttles = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(trigger_throttles)
            .where(trigger_throttles.c.source == source)
        )
    return int(debounces or 0), int(throttles or 0)


async def gate_rows(container: Container, source: str, workflow_id: str) -> None:
    """One pending debounced start and one throttle window of ``source``."""
    now = utc_now()
    await container.store.debounce_start(
        source, "k", workflow_id, {"x": 1}, None, now + timedelta(hours=1), now
    )
    await container.store.throttle_take(source, "k", 5, 60.0, now)


async def test_a_deleted_hook_takes_its_debounce_and_throttle_rows(container: Container) -> None:
    wf = await make_workflow(container.store)
    config = HookConfig(auth=HookAuth(scheme=HookScheme.HMAC, credential="s"))
    hook = await container.store.create_hook(
        NewHook("h", wf.id, None, True, config, None), utc_now()
    )
    await gate_rows(container, hook_source(hook.id), wf.id)
    assert await trigger_rows(container, hook_source(hook.id)) == (1, 1)
    await container.store.delete_hook(hook.id)
    assert await trigger_rows(container, hook_source(hook.id)) == (0, 0)


async def test_prune_deletes_windows_that_are_over_and_rows_of_gone_owners(
    container: Container,
) -> None:
    wf = await make_workflow(container.store)
    config = HookConfig(auth=HookAuth(scheme=HookScheme.HMAC, credential="s"))
    live = await container.store.create_hook(
        NewHook("live", wf.id, None, True, config, None), utc_now()
    )
    await gate_rows(container, hook_source(live.id), wf.id)
    # Rows of owners deleted before their rows went with them (an older version).
    await gate_rows(container, hook_source("hk_gone"), wf.id)
    await gate_rows(container, trigger_source("et_gone"), wf.id)
    # A window of the live hook that began more than the longest period ago is over.
    old = utc_now() - timedelta(seconds=MAX_PERIOD_S + 60)
    await container.store.throttle_take(hook_source(live.id), "old", 5, 60.0, old)
    assert await trigger_rows(container, hook_source(live.id)) == (1, 2)

    dry = await container.retention.prune(dry_run=True)
    assert (dry.leftovers["trigger_debounces"], dry.leftovers["trigger_throttles"]) == (2, 3)
    assert await trigger_rows(container, hook_source("hk_gone")) == (1, 1)
    container.retention.batch = 1  # bounded batches: one row per kind per transaction
    report = await container.retention.prune()
    assert (report.leftovers["trigger_debounces"], report.leftovers["trigger_throttles"]) == (
        2,
        3,
    )
    for gone in (hook_source("hk_gone"), trigger_source("et_gone")):
        assert await trigger_rows(container, gone) == (0, 0)
    assert await trigger_rows(container, hook_source(live.id)) == (1, 1)  # its current ones
