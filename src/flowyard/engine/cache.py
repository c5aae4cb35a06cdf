"""Compiled workflows cached per (workflow, version): versions are immutable, so a compiled
version never goes stale."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.validation import DefinitionValidator
from flowyard.nodes.registry import NodeRegistry

Loader = Callable[[str, int], Awaitable[dict[str, Any]]]

#: A stored version compiled within the compile budget when it was saved; loading it may take
#: this many times the budget, so a busier machine does not fail runs of a valid workflow.
STORED_BUDGET_FACTOR = 4


class WorkflowCache:
    """A bounded LRU of compiled versions, loading misses through ``loader``."""

    def __init__(
        self,
        validator: DefinitionValidator,
        loader: Loader,
        *,
        size: int = 512,
        budget_s: float | None = None,
    ) -> None:
        self._validator = validator
        self._loader = loader
        self._size = size
        limits = validator.expressions.limits
        self._budget_s = budget_s or limits.compile_budget_s * STORED_BUDGET_FACTOR
        self._items: OrderedDict[tuple[str, int], CompiledWorkflow] = OrderedDict()
        self._lock = asyncio.Lock()

    @property
    def registry(self) -> NodeRegistry:
        """The node types definitions compile against."""
        return self._validator.registry

    async def get(self, workflow_id: str, version: int) -> CompiledWorkflow:
        """The compiled version (raises DefinitionError if a stored version no longer
        compiles, e.g. a plugin node type was uninstalled)."""
        key = (workflow_id, version)
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found
        async with self._lock:
            found = self._items.get(key)
            if found is None:
                raw = await self._loader(workflow_id, version)
                # Compiling a large definition's templates takes a while (~0.5 s for 1,000
                # nodes): off the event loop, so the steps in flight keep running meanwhile.
                found = await asyncio.to_thread(
                    self._validator.compile, raw, budget_s=self._budget_s
                )
                self._items[key] = found
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
            return found
