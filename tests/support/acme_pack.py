"""``acme.pick``: a node pack's type that routes by config fields of its own, which the
console does not know: go where ``routes`` says for the input's ``answer``, else
``otherwise``. Registered in process by tests, and installed as a pack's module by
:func:`support.packs.write_pick_pack` (this file's text)."""

from __future__ import annotations

from flowyard.nodes.base import NodeConfig, NodeOutcome, NodeType, Route, StepContext
from flowyard.nodes.registry import NodeRegistry


class PickConfig(NodeConfig):
    """Where each answer goes."""

    routes: dict[str, str]
    otherwise: str | None = None


class Pick(NodeType[PickConfig]):
    """Routes by the input's answer."""

    type_name = "acme.pick"
    config_model = PickConfig
    description = "Routes by the input's answer."
    branching = True

    def routes(self, config: PickConfig) -> list[Route]:
        """One route per answer (labelled by its pointer), and ``otherwise``."""
        found = [Route(f"/config/routes/{k}", v) for k, v in config.routes.items()]
        if config.otherwise:
            found.append(Route("/config/otherwise", config.otherwise, "otherwise"))
        return found

    async def execute(self, ctx: StepContext, config: PickConfig) -> NodeOutcome:
        """Go where the answer says."""
        answer = str((ctx.scope.get("input") or {}).get("answer"))
        return NodeOutcome(next=config.routes.get(answer, config.otherwise))


def register(registry: NodeRegistry) -> None:
    """The pack's entry point."""
    registry.register(Pick)
