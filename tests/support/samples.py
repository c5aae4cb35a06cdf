"""Helpers of the samples' end-to-end tests (tests/samples/): the definitions of examples/ as
shipped, the fakes' identities they run against, and reading what a run did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowyard.bootstrap import Container
from flowyard.domain.errors import NotFound
from flowyard.domain.ids import RunId
from flowyard.domain.records import StepRecord
from flowyard.service import RunDetail
from support.harness import run_ends

EXAMPLES = Path(__file__).parents[2] / "examples"
LEAD_ROUTING, CAMPAIGN, INSTAGRAM = (
    "lead_routing.json",
    "campaign_sentiment.json",
    "instagram_keywords.json",
)
IG_TOKEN = "EAAsamplesGraphAccessToken0123456789"
IG_ACCOUNT = "17841400000000042"
#: People who messaged the Instagram account within 24 hours (a DM reaches them).
FAN, OTHER_FAN = "1234500000000001", "1234500000000002"
COMMENTS = ("17873440459140001", "17873440459140002")


def sample(file: str) -> dict[str, Any]:
    """A definition of examples/, as shipped."""
    definition: dict[str, Any] = json.loads((EXAMPLES / file).read_text())
    return definition


def sample_vars(file: str) -> dict[str, Any]:
    """The ``vars`` a sample ships with."""
    found: dict[str, Any] = sample(file)["vars"]
    return found


async def save_and_start(
    container: Container, file: str, input: Any, vars: dict[str, Any] | None = None
) -> str:
    """Save the sample unless it is saved, and start a run of it; the run's id."""
    name = sample(file)["name"]
    try:
        await container.store.get_workflow(name)
    except NotFound:
        await container.service.create_workflow(sample(file))
    run, _ = await container.service.start_run(name, input, vars=vars)
    return run.id


async def finished(container: Container, run_id: str) -> RunDetail:
    """The run's detail once it has ended."""
    await run_ends(container, RunId(run_id))
    return await container.service.get_run(run_id)


def taken(detail: RunDetail) -> list[str]:
    """The nodes the run went through, in order (each once: a retried step too)."""
    return list(dict.fromkeys(s.node_id for s in sorted(detail.steps, key=lambda s: s.id)))


def step(detail: RunDetail, node_id: str) -> StepRecord:
    """The last step of ``node_id``."""
    return [s for s in detail.steps if s.node_id == node_id][-1]
