"""The graph of a version or of the draft, as the console draws it (see
:mod:`flowyard.engine.graph`): the edges the node types declare, plugin types' included."""

from __future__ import annotations

import asyncio

from flowyard.domain.records import WorkflowRecord
from flowyard.engine.graph import Graph, definition_graph
from flowyard.service.drafts import DraftUseCases


class GraphUseCases(DraftUseCases):
    """Graphs of versions and drafts."""

    async def workflow_graph(
        self, ref: str, version: int | None = None, *, draft: bool = False
    ) -> tuple[WorkflowRecord, int | None, Graph]:
        """The workflow, the version drawn (None for the draft) and its graph: of the draft
        with ``draft``, else of ``version`` (the latest when None). NotFound as the reads."""
        if draft:
            view = await self.get_draft(ref)
            definition, number = view.draft.document.get("definition") or {}, None
            record = view.workflow
        else:
            record = await self.get_workflow(ref)
            found = await self.get_version(record.id, version)
            definition, number = found.definition, found.version
        registry = self.validator.registry
        # A 1,000-node definition parses 1,000 configs: off the event loop.
        graph = await asyncio.to_thread(definition_graph, definition, registry)
        return record, number, graph
