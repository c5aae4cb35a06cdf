"""The node registry: an instance (never a module global) mapping type names to node types,
and the report of the node packs it loaded from entry points (docs/plugins.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from flowyard.domain.credentials import CredentialType
from flowyard.nodes.base import NodeType
from flowyard.nodes.builtin import BUILTIN_TYPES
from flowyard.outbound import Authenticator

ENTRY_POINT_GROUP = "flowyard.nodes"
#: flowyard's own distribution: its packs always load, and load first.
OWN_DISTRIBUTION = "flowyard"
#: A load error kept in the report is cut to this many characters.
MAX_ERROR_CHARS = 1000
_log = logging.getLogger(__name__)


class PluginStatus(StrEnum):
    """What became of one ``flowyard.nodes`` entry point."""

    #: Imported and every type it brings registered.
    LOADED = "loaded"
    #: Not registered: it failed to import, raised, or brought a type name already taken.
    FAILED = "failed"
    #: Installed, not loaded: third-party packs load only with ``load_plugins``.
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class PluginReport:
    """One entry point of the ``flowyard.nodes`` group and what loading it did."""

    #: The entry point's name.
    name: str
    #: What it names: ``module:attribute``.
    value: str
    #: The distribution that declares it, and its version (None when unknown).
    distribution: str | None
    version: str | None
    status: PluginStatus
    #: The node types it registered (loaded packs), sorted.
    types: tuple[str, ...] = ()
    #: Why it failed: the exception's type and message (no traceback: see the log at DEBUG).
    error: str | None = None

    def label(self) -> str:
        """``name (distribution version)`` for one-line reports."""
        if self.distribution is None:
            return self.name
        version = f" {self.version}" if self.version else ""
        return f"{self.name} ({self.distribution}{version})"


class PackRefused(Exception):
    """A pack registered a node type whose name is already taken (it is refused whole)."""


class NodeRegistry:
    """Node types by name. Third-party packs register through the ``flowyard.nodes`` group.

    An entry point may name a ``NodeType`` subclass or a callable ``register(registry)`` that
    registers several. A pack is all or nothing: it is staged in a registry of its own and
    adopted only when every type it brings is new, so a pack that fails halfway or reuses a
    taken name leaves nothing behind (and never replaces a type another pack relies on).
    """

    def __init__(self) -> None:
        self._types: dict[str, NodeType[Any]] = {}
        #: Who registered a type, for conflicts: the pack's label; absent for direct calls.
        self._owners: dict[str, str] = {}
        self._plugins: list[PluginReport] = []

    def register(
        self, node_type: type[NodeType[Any]] | NodeType[Any], *, replace: bool = False
    ) -> None:
        """Add a node type (class or instance); a duplicate name is an error unless ``replace``."""
        instance = node_type() if isinstance(node_type, type) else node_type
        name = instance.type_name
        if name in self._types and not replace:
            raise ValueError(self._taken(name))
        self._types[name] = instance

    def _taken(self, name: str) -> str:
        """Why ``name`` cannot be registered again, and what to do instead."""
        owner = self._owners.get(name, "a flowyard built-in")
        return (
            f"node type {name!r} is already registered ({owner}); a node type is never "
            f"replaced by another pack: give yours another name, prefixed with your pack's "
            f"(e.g. 'acme.{name}')"
        )

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

    async def aclose(self) -> None:
        """Let every node type release what it keeps (one failing does not stop the
        others)."""
        for name, instance in self._types.items():
            try:
                await instance.aclose()
            except Exception:
                _log.exception("node type %r failed to close", name)

    def plugins(self) -> list[PluginReport]:
        """Every ``flowyard.nodes`` entry point seen by :meth:`load_entry_points`, in load
        order: loaded, failed (with the error) or disabled."""
        return list(self._plugins)

    def failed_plugins(self) -> list[PluginReport]:
        """The entry points that failed to load."""
        return [p for p in self._plugins if p.status is PluginStatus.FAILED]

    def load_entry_points(
        self, group: str = ENTRY_POINT_GROUP, *, third_party: bool = True
    ) -> list[str]:
        """Load node packs; returns the names of entry points loaded. flowyard's own packs
        (its provider integrations) always load, first; other distributions' only with
        ``third_party``, in the order of their distribution names (so which of two packs
        claims a name first does not depend on the order of ``sys.path``).

        A pack that fails to import, raises while registering, brings a type whose schema
        cannot be generated or a type name already taken is skipped whole, logged and kept
        in :meth:`plugins` with its error, so one broken plugin does not take the service
        down and is still seen.
        """
        found = sorted(
            entry_points(group=group), key=lambda ep: (not _ours(ep), _dist_name(ep) or "")
        )
        loaded: list[str] = []
        for ep in found:
            dist, version = _dist_name(ep), _dist_version(ep)
            if not third_party and not _ours(ep):
                self._plugins.append(
                    PluginReport(ep.name, ep.value, dist, version, PluginStatus.DISABLED)
                )
                continue
            report = self._load_pack(ep, dist, version)
            self._plugins.append(report)
            if report.status is PluginStatus.LOADED:
                loaded.append(ep.name)
        return loaded

    def _load_pack(self, ep: EntryPoint, dist: str | None, version: str | None) -> PluginReport:
        """Stage the pack's types in a registry of its own; adopt them all or none."""
        staged = NodeRegistry()
        label = PluginReport(ep.name, ep.value, dist, version, PluginStatus.LOADED).label()
        try:
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, NodeType):
                staged.register(obj)
            elif callable(obj):
                obj(staged)
            else:
                raise TypeError(
                    f"entry point {ep.name!r} names neither a NodeType subclass nor a "
                    "callable register(registry)"
                )
            for name in staged.names():
                if name in self._types:
                    raise PackRefused(self._taken(name))
                # Served by GET /node-types: a schema that cannot be generated would break
                # that page for every client, so the pack is refused here instead.
                staged._types[name].describe()
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:MAX_ERROR_CHARS]
            # The one line an operator sees at start (any command): the service runs on.
            _log.warning(
                "node pack %s failed to load and is skipped (the service runs without it; "
                "GET /api/v1/plugins): %s",
                label,
                error,
            )
            _log.debug("node pack %s: the traceback", label, exc_info=True)
            return PluginReport(ep.name, ep.value, dist, version, PluginStatus.FAILED, error=error)
        for name, instance in staged._types.items():
            self._types[name] = instance
            self._owners[name] = f"by the pack {label}"
        return PluginReport(
            ep.name, ep.value, dist, version, PluginStatus.LOADED, types=tuple(staged.names())
        )


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
    return _dist_name(ep) == OWN_DISTRIBUTION


def _dist_name(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else str(dist.name)


def _dist_version(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else str(dist.version)
