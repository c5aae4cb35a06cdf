"""Third-party node packs load through the ``flowyard.nodes`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from flowyard.nodes import registry as registry_module
from flowyard.nodes.base import NodeOutcome, NodeType, StepContext
from flowyard.nodes.registry import NodeRegistry


class Shout(NodeType[Any]):
    """A plugin node type."""

    type_name = "acme.shout"

    async def execute(self, ctx: StepContext, config: Any) -> NodeOutcome:
        return NodeOutcome(output="HEY")


class Whisper(Shout):
    type_name = "acme.whisper"


def register_pack(registry: NodeRegistry) -> None:
    registry.register(Whisper)


def _entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=registry_module.ENTRY_POINT_GROUP)


def test_entry_points_register_classes_and_pack_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = [
        _entry("shout", f"{__name__}:Shout"),
        _entry("pack", f"{__name__}:register_pack"),
    ]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: found)
    registry = NodeRegistry()
    assert registry.load_entry_points() == ["shout", "pack"]
    assert {"acme.shout", "acme.whisper"} <= set(registry.names())


def test_a_broken_pack_is_skipped_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    found = [
        _entry("broken", "flowyard_no_such_module:Thing"),
        _entry("shout", f"{__name__}:Shout"),
    ]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: found)
    registry = NodeRegistry()
    assert registry.load_entry_points() == ["shout"]
    assert "broken" in caplog.text
