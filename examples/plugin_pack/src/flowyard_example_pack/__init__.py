"""An example flowyard node pack: one node type, ``example.discord``, that posts a message to
a Discord channel (docs/plugins.md walks through it).

flowyard finds the pack through the entry point ``example`` of the group ``flowyard.nodes``
(see pyproject.toml), which names :func:`register`.
"""

from __future__ import annotations

from flowyard.nodes.registry import NodeRegistry
from flowyard_example_pack.discord import DiscordConfig, DiscordNode, DiscordOutput

__all__ = ["DiscordConfig", "DiscordNode", "DiscordOutput", "register"]


def register(registry: NodeRegistry) -> None:
    """The pack's entry point: register every node type it brings (all or nothing: a name
    already taken refuses the whole pack)."""
    registry.register(DiscordNode)
