"""The graph of a version or of the draft, as the console draws it (see
:mod:`flowyard.engine.graph`): the edges the node types declare, plugin types' included."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import WorkflowRecord
from flowyard.engine.graph import Graph, definition_graph
from flowyard.service.drafts import DraftUseCases

#: Versions' graphs kept per process (a version is immutable and the registry fixed for the
#: process's life, so a kept graph never goes stale): the console draws a 1,000-node graph
#: for every page that shows it.
KEPT_GRAPHS = 32


class GraphUseCases(DraftUseCases):
    """Graphs of versions and drafts."""

    _graphs: OrderedDict[tuple[WorkflowId, int], Graph] | None = None

    async def workflow_graph(
        self, ref: str, version: int | None = None, *, draft: bool = False
    ) -> tuple[WorkflowRecord, int | None, Graph]:
        """The workflow, the version drawn (None for the draft) and its graph: of the draft
        with ``draft``, else of ``version`` (the latest when None). NotFound as the reads."""
        if draft:
            view = await self.get_draft(ref)
            definition = view.draft.document.get("definition") or {}
            return view.workflow, None, await self._graph(definition)
        record = await self.get_workflow(ref)
        found = await self.get_version(record.id, version)
        kept = self._kept_graphs()
        key = (record.id, found.version)
        if (graph := kept.get(key)) is None:
            graph = await self._graph(found.definition)
            kept[key] = graph
            while len(kept) > KEPT_GRAPHS:
                kept.popitem(last=False)
        kept.move_to_end(key)
        return record, found.version, graph

    def _kept_graphs(self) -> OrderedDict[tuple[WorkflowId, int], Graph]:
        if self._graphs is None:
            self._graphs = OrderedDict()
        return self._graphs

    async def _graph(self, definition: dict[str, Any]) -> Graph:
        # A 1,000-node definition parses 1,000 configs: off the event loop.
        return await asyncio.to_thread(definition_graph, definition, self.validator.registry)
