"""Third-party node packs load through the ``flowyard.nodes`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from flowyard.nodes import registry as registry_module
from flowyard.nodes.base import NodeOutcome, NodeType, StepContext
from flowyard.nodes.registry import NodeRegistry, PluginStatus


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


class Slack(Shout):
    """A pack's type that takes a name flowyard's integrations already use."""

    type_name = "slack"


def register_clashing_pack(registry: NodeRegistry) -> None:
    registry.register(Whisper)
    registry.register(Slack)


class Unschemable(Shout):
    type_name = "acme.unschemable"

    @classmethod
    def describe(cls) -> dict[str, Any]:
        raise RuntimeError("no schema")


def test_a_pack_reusing_a_taken_name_is_refused_whole_and_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    found = [_entry("clash", f"{__name__}:register_clashing_pack")]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: found)
    registry = NodeRegistry()
    registry.register(Slack)
    before = registry.get("slack")
    assert registry.load_entry_points() == []
    # Nothing of the pack stays: not its new type either (all or nothing), and the taken
    # name still has its first owner.
    assert registry.names() == ["slack"] and registry.get("slack") is before
    [report] = registry.plugins()
    assert (report.name, report.status, report.types) == ("clash", PluginStatus.FAILED, ())
    assert report.error is not None
    assert report.error.startswith("PackRefused: node type 'slack' is already registered")
    assert "'acme.slack'" in report.error
    assert "node pack clash failed to load and is skipped" in caplog.text


def test_failures_are_kept_with_their_error_and_loaded_packs_with_their_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = [
        _entry("broken", "flowyard_no_such_module:Thing"),
        _entry("pack", f"{__name__}:register_pack"),
        _entry("unschemable", f"{__name__}:Unschemable"),
        _entry("nothing", f"{__name__}:ANSWER"),
    ]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: found)
    registry = NodeRegistry()
    assert registry.load_entry_points() == ["pack"]
    reports = {p.name: p for p in registry.plugins()}
    assert reports["pack"].status is PluginStatus.LOADED
    assert reports["pack"].types == ("acme.whisper",)
    assert reports["broken"].error == (
        "ModuleNotFoundError: No module named 'flowyard_no_such_module'"
    )
    # GET /node-types would fail for everyone on a type whose schema cannot be generated.
    assert reports["unschemable"].error == "RuntimeError: no schema"
    assert "acme.unschemable" not in registry
    assert reports["nothing"].error is not None
    assert "neither a NodeType subclass nor a callable" in reports["nothing"].error
    assert [p.name for p in registry.failed_plugins()] == ["broken", "unschemable", "nothing"]


def test_third_party_packs_are_listed_as_disabled_without_load_plugins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = [_entry("shout", f"{__name__}:Shout")]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: found)
    registry = NodeRegistry()
    assert registry.load_entry_points(third_party=False) == []
    assert "acme.shout" not in registry
    [report] = registry.plugins()
    assert (report.name, report.status) == ("shout", PluginStatus.DISABLED)


def test_flowyard_own_pack_loads_first_and_is_reported() -> None:
    registry = NodeRegistry()
    registry.load_entry_points(third_party=False)
    own = [p for p in registry.plugins() if p.distribution == "flowyard"]
    assert [(p.name, p.status) for p in own] == [("integrations", PluginStatus.LOADED)]
    assert {"salesforce", "slack", "email"} <= set(own[0].types)


ANSWER = 42
