"""The node registry: an instance (never a module global) mapping type names to node types."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from flowyard.domain.credentials import CredentialType
from flowyard.nodes.base import NodeType
from flowyard.nodes.builtin import BUILTIN_TYPES
from flowyard.outbound import Authenticator

ENTRY_POINT_GROUP = "flowyard.nodes"
_log = logging.getLogger(__name__)


class NodeRegistry:
    """Node types by name. Third-party packs register through the ``flowyard.nodes`` group.

    An entry point may name a ``NodeType`` subclass or a callable ``register(registry)`` that
    registers several.
    """

    def __init__(self) -> None:
        self._types: dict[str, NodeType[Any]] = {}

    def register(
        self, node_type: type[NodeType[Any]] | NodeType[Any], *, replace: bool = False
    ) -> None:
        """Add a node type (class or instance); a duplicate name is an error unless ``replace``."""
        instance = node_type() if isinstance(node_type, type) else node_type
        name = instance.type_name
        if name in self._types and not replace:
            raise ValueError(f"node type {name!r} is already registered")
        self._types[name] = instance

    def get(self, type_name: str) -> NodeType[Any] | None:
        """The node type called ``type_name``, or None."""
        return self._types.get(type_name)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    def names(self) -> list[str]:
        """Registered type names, sorted."""
        return sorted(self._types)

    def listening_types(self) -> frozenset[str]:
        """The types whose steps read the run's buffered signals (loaded when claimed)."""
        return frozenset(name for name, t in self._types.items() if t.listens_for_signals)

    def authenticators(self) -> dict[CredentialType, Authenticator]:
        """The authenticators the registered types bring, by credential type (a type two
        node types both bring keeps the first one registered)."""
        found: dict[CredentialType, Authenticator] = {}
        for name in self.names():
            for type_, authenticator in self._types[name].authenticators().items():
                found.setdefault(type_, authenticator)
        return found

    def describe(self) -> list[dict[str, Any]]:
        """Every type with its config JSON Schema, sorted by name."""
        return [self._types[name].describe() for name in self.names()]

    def load_entry_points(
        self, group: str = ENTRY_POINT_GROUP, *, third_party: bool = True
    ) -> list[str]:
        """Load node packs; returns the names of entry points loaded. flowyard's own packs
        (its provider integrations) always load; other distributions' only with
        ``third_party``.

        A pack that fails to import is logged and skipped so one broken plugin does not take
        the service down.
        """
        loaded: list[str] = []
        for ep in entry_points(group=group):
            if not third_party and not _ours(ep):
                continue
            try:
                obj = ep.load()
                if isinstance(obj, type) and issubclass(obj, NodeType):
                    self.register(obj)
                elif callable(obj):
                    obj(self)
                else:
                    raise TypeError(f"entry point {ep.name!r} is neither a NodeType nor callable")
            except Exception:
                _log.exception("failed to load node pack %r from %s", ep.name, ep.value)
                continue
            loaded.append(ep.name)
        return loaded


def default_registry(*, load_plugins: bool = True) -> NodeRegistry:
    """A registry with the built-in node types, flowyard's own provider integrations, and
    installed third-party plugins unless disabled."""
    registry = NodeRegistry()
    for node_type in BUILTIN_TYPES:
        registry.register(node_type)
    registry.load_entry_points(third_party=load_plugins)
    return registry


def _ours(ep: EntryPoint) -> bool:
    """An entry point of flowyard's own distribution."""
    dist = getattr(ep, "dist", None)
    return dist is not None and dist.name == "flowyard"
