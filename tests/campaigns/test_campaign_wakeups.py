"""A campaign's run keeps its campaign's priority and lane whatever wakes it, on SQLite and
PostgreSQL: a signal, a reply matched by correlation key, a state-machine action, a delay or
a wait's timeout firing, a step's retry, a run's retry. Every step row the run ever had is
read back: none has the interactive default.

The campaigns run at priority 2 (neither the bulk default 3 nor the interactive 6), so a
step row that took a default instead of its run's priority shows."""

from __future__ import annotations

from typing import Any

from correlation.test_correlation_api import APPROVAL
from flowyard.bootstrap import Container
from flowyard.campaigns.items import ItemFormat
from flowyard.domain.campaigns import CampaignRecord
from flowyard.domain.ids import RunId
from flowyard.domain.records import RunRecord
from flowyard.domain.statuses import RunStatus
from support.http import RecordingServer, Reply
from support.runs import drive

PRIORITY = 2


async def in_status(container: Container, run_id: str, *statuses: RunStatus) -> None:
    async def check() -> bool:
        return (await container.store.get_run(RunId(run_id))).status in statuses

    await drive(container, check)


async def campaign_of(
    container: Container,
    definition: dict[str, Any],
    items: list[dict[str, Any]],
    *,
    item_key: str | None = None,
) -> tuple[CampaignRecord, list[RunRecord]]:
    await container.service.save_workflow(definition)
    campaign, _ = await container.service.start_campaign(
        definition["name"],
        "steered",
        ItemFormat.JSON,
        items,
        item_key=item_key,
        priority=PRIORITY,
    )
    runs = await container.store.list_campaign_runs(campaign.id, limit=100)
    return campaign, runs


async def step_lanes(container: Container, run_id: str) -> list[tuple[str, int, str]]:
    """(node, priority, lane) of every step row of the run."""
    steps = await container.store.list_steps(RunId(run_id))
    return [(s.node_id, s.priority, s.lane) for s in steps]


async def assert_in_lane(
    container: Container, run_id: str, campaign: CampaignRecord, nodes: int
) -> None:
    rows = await step_lanes(container, run_id)
    assert len(rows) >= nodes, rows
    assert {(p, lane) for _, p, lane in rows} == {(PRIORITY, campaign.id)}, rows
    run = await container.store.get_run(RunId(run_id))
    assert (run.priority, run.lane) == (PRIORITY, campaign.id)


def waiting(name: str, **wait: Any) -> dict[str, Any]:
    """Wait for ``reply`` (with ``wait``'s timeout settings), then end."""
    nodes = [
        {
            "id": "wait",
            "type": "wait_for_signal",
            "config": {"signal": "reply", **wait},
            "next": "done",
        },
        {"id": "done", "type": "end"},
    ]
    if "on_timeout" in wait:
        nodes.append({"id": "late", "type": "end"})
    return {"name": name, "start": "wait", "nodes": nodes}


async def test_a_signal_wakes_the_run_in_its_lane(container: Container) -> None:
    campaign, [run] = await campaign_of(container, waiting("signalled"), [{"n": 1}])
    await in_status(container, run.id, RunStatus.WAITING)
    await container.service.send_signal(run.id, "reply", {"text": "yes"})
    await in_status(container, run.id, RunStatus.SUCCEEDED)
    await assert_in_lane(container, run.id, campaign, nodes=2)


async def test_a_reply_by_correlation_key_wakes_the_run_in_its_lane(
    container: Container,
) -> None:
    definition = {**waiting("outreach"), "correlation": {"key": "{{ input.phone }}"}}
    campaign, [run] = await campaign_of(
        container, definition, [{"phone": "+15550100"}], item_key="{{ item.phone }}"
    )
    await in_status(container, run.id, RunStatus.WAITING)
    _, woke = await container.service.signal_by_correlation(
        "outreach", "+15550100", "reply", {"text": "stop"}
    )
    assert woke
    await in_status(container, run.id, RunStatus.SUCCEEDED)
    await assert_in_lane(container, run.id, campaign, nodes=2)


async def test_state_machine_actions_move_the_run_in_its_lane(container: Container) -> None:
    campaign, [run] = await campaign_of(
        container, APPROVAL, [{"order": "o-1"}], item_key="{{ item.order }}"
    )
    await in_status(container, run.id, RunStatus.WAITING)
    await container.service.take_action(run.id, "submit", actor="user:ada")
    await container.service.take_action(run.id, "approve", actor="user:ada")
    await in_status(container, run.id, RunStatus.SUCCEEDED)
    await assert_in_lane(container, run.id, campaign, nodes=2)


async def test_a_delay_and_a_wait_timeout_fire_in_the_lane(container: Container) -> None:
    delayed = {
        "name": "delayed",
        "start": "pause",
        "nodes": [
            {"id": "pause", "type": "delay", "config": {"duration": "0.3s"}, "next": "done"},
            {"id": "done", "type": "end"},
        ],
    }
    campaign, [run] = await campaign_of(container, delayed, [{"n": 1}])
    await in_status(container, run.id, RunStatus.SUCCEEDED)
    await assert_in_lane(container, run.id, campaign, nodes=2)

    timed = waiting("timed", timeout="1s", on_timeout="late")
    campaign, [run] = await campaign_of(container, timed, [{"n": 1}])
    await in_status(container, run.id, RunStatus.SUCCEEDED)
    assert "late" in {node for node, _, _ in await step_lanes(container, run.id)}
    await assert_in_lane(container, run.id, campaign, nodes=2)


def calling(url: str, **retry: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": "call", "type": "http", "config": {"url": url}, "next": "done"}
    node["retry"] = {"max_attempts": 1, **retry}
    return {
        "name": "calling",
        "start": "call",
        "nodes": [node, {"id": "done", "type": "end"}],
    }


async def test_a_step_retry_and_a_run_retry_stay_in_the_lane(
    container: Container, http_server: RecordingServer
) -> None:
    http_server.script("/flaky", [Reply(503), Reply(200)])
    http_server.script("/down", [Reply(500)])
    definition = calling(http_server.url + "/{{ input.path }}", max_attempts=2)
    definition["nodes"][0]["retry"].update(initial_interval_s=0.1, jitter="none")
    campaign, [flaky, down] = await campaign_of(
        container, definition, [{"path": "flaky"}, {"path": "down"}]
    )
    # "flaky" failed once and was retried (its step row rescheduled); "down" failed twice.
    await in_status(container, flaky.id, RunStatus.SUCCEEDED)
    await in_status(container, down.id, RunStatus.FAILED)
    assert len(http_server.to("/flaky")) == 2
    await assert_in_lane(container, flaky.id, campaign, nodes=2)
    http_server.script("/down", [Reply(200)])
    retried = await container.service.retry_run(down.id)
    assert (retried.priority, retried.lane) == (PRIORITY, campaign.id)
    await in_status(container, down.id, RunStatus.SUCCEEDED)
    await assert_in_lane(container, down.id, campaign, nodes=2)
