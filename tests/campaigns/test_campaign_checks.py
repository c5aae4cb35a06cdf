"""A campaign's items are checked as a single run start checks its input, through the
campaign's fast path (the schema compiled once, the size bounded without measuring twice):
what a run start refuses, a campaign refuses with the same problem at the item."""

from __future__ import annotations

from typing import Any

import pytest

from flowyard.bootstrap import Container
from flowyard.campaigns.items import ItemFormat
from flowyard.domain.errors import InvalidInput
from flowyard.service.runs import MAX_RUN_PAYLOAD_BYTES

CHECKED: dict[str, Any] = {
    "name": "checked",
    "input_schema": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": "^(a|a)+$"}, "note": {}},
    },
    "start": "a",
    "nodes": [{"id": "a", "type": "set", "config": {"values": {"ok": True}}}],
}


@pytest.fixture
async def checked(container: Container) -> Container:
    await container.service.create_workflow(CHECKED, "tester")
    return container


async def refused(container: Container, items: list[Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as caught:
        await container.service.start_campaign("checked", "c", ItemFormat.JSON, items)
    assert await container.service.list_campaigns() == []
    return [(p.pointer, p.code) for p in caught.value.problems]


async def test_an_item_too_large_once_escaped_is_refused(checked: Container) -> None:
    # 2 UTF-8 bytes a character, 6 characters once ASCII-escaped as a run start measures it:
    # under the limit as compact UTF-8, over it as measured.
    note = "é" * (MAX_RUN_PAYLOAD_BYTES // 5)
    items = [{"name": "aa"}, {"name": "a", "note": note}]
    assert await refused(checked, items) == [("/items/1", "too_large")]


async def test_a_pattern_out_of_budget_and_a_bad_item_are_named(checked: Container) -> None:
    items = [{"name": "a"}, {"name": "a" * 40 + "!"}, {"name": 3}, {"name": "aaa"}]
    assert await refused(checked, items) == [
        ("/items/1", "pattern_timeout"),
        ("/items/2/name", "schema"),
    ]
    campaign, created = await checked.service.start_campaign(
        "checked", "ok", ItemFormat.JSON, [{"name": "a"}, {"name": "aaaa", "note": [1, "é"]}]
    )
    assert created and campaign.total == 2
