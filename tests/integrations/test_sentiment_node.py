"""The sentiment node type: VADER's labels for clear cases, configurable thresholds, empty and
huge texts (capped, analysed off the event loop), and a reply routed on its sentiment by a
real worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pydantic
import pytest

from flowyard.bootstrap import Container
from flowyard.domain.statuses import RunStatus
from flowyard.expressions import ExpressionEngine
from flowyard.integrations.sentiment import SentimentNode
from flowyard.nodes.base import StepContext
from support.chatflows import sqlite_db_url
from support.runs import run_definition

NODE = SentimentNode()


# The node and its provider under test, not the store: SQLite only (test_chat_worker.py runs
# end to end on both backends).
db_url = pytest.fixture(name="db_url")(sqlite_db_url)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


async def analyse(client: httpx.AsyncClient, text: str, **config: Any) -> dict[str, Any]:
    ctx = StepContext(
        run_id="run_1",
        workflow_id="wf_1",
        workflow_version=1,
        node_id="mood",
        step_id=1,
        attempt=1,
        iteration=0,
        idempotency_key="run_1:mood:0",
        scope={"input": {"reply": text}, "vars": {}, "steps": {}, "run": {}},
        expressions=ExpressionEngine(),
        http=client,
    )
    outcome = await NODE.execute(ctx, NODE.parse_config({"text": "{{ input.reply }}", **config}))
    assert NODE.output_model is not None
    return NODE.output_model.model_validate(outcome.output).model_dump()


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Thanks, the demo looks good and I would love to learn more!", "positive"),
        ("I love this product, it is wonderful!", "positive"),
        ("This is the worst support I have ever had. Cancel my account.", "negative"),
        ("I am not happy with this.", "negative"),
        ("The meeting is at 3 pm.", "neutral"),
        ("The package arrived on Tuesday.", "neutral"),
    ],
)
async def test_clear_cases_get_their_label(
    client: httpx.AsyncClient, text: str, label: str
) -> None:
    out = await analyse(client, text)
    assert out["label"] == label
    assert -1 <= out["score"] <= 1
    assert out["positive"] + out["neutral"] + out["negative"] == pytest.approx(1, abs=0.01)
    assert out["truncated"] is False
    if label == "positive":
        assert out["score"] >= 0.05 and out["positive"] > out["negative"]
    elif label == "negative":
        assert out["score"] <= -0.05 and out["negative"] > out["positive"]
    else:
        assert out["score"] == 0 and out["neutral"] == 1


async def test_thresholds_move_the_labels(client: httpx.AsyncClient) -> None:
    mild = "The product is okay."  # compound ~0.23
    assert (await analyse(client, mild))["label"] == "positive"
    assert (await analyse(client, mild, positive_threshold=0.5))["label"] == "neutral"
    sad = "I am not happy with this."  # compound ~-0.46
    assert (await analyse(client, sad, negative_threshold=-0.6))["label"] == "neutral"
    both = await analyse(client, sad, positive_threshold=-0.5, negative_threshold=-0.9)
    assert both["label"] == "positive"


@pytest.mark.parametrize(
    "config",
    [
        {"positive_threshold": 0.1, "negative_threshold": 0.1},
        {"positive_threshold": -0.2, "negative_threshold": 0.2},
        {"positive_threshold": 1.5},
        {"max_chars": 0},
        {"max_chars": 1_000_000},
        {"model": "bert"},
    ],
)
def test_config_bounds(config: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        NODE.parse_config({"text": "x", **config})


async def test_an_empty_text_is_neutral(client: httpx.AsyncClient) -> None:
    out = await analyse(client, "")
    assert out == {
        "label": "neutral",
        "score": 0.0,
        "positive": 0.0,
        "neutral": 0.0,
        "negative": 0.0,
        "truncated": False,
    }


async def test_a_huge_text_is_capped_and_analysed_off_the_loop(client: httpx.AsyncClient) -> None:
    text = "The support team was wonderful and fixed everything quickly. " * 10_000  # 620 kB
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    out = await analyse(client, text)
    took = time.perf_counter() - started
    done.set()
    await ticker
    assert out["truncated"] is True and out["label"] == "positive"
    # Analysed on the loop, the ticker would have stalled for the whole analysis.
    assert max(gaps) < took / 2, (max(gaps), took)
    small = await analyse(client, text[:5_000], max_chars=5_000)
    assert small["truncated"] is False


async def test_a_reply_is_routed_on_its_sentiment(container: Container) -> None:
    definition = {
        "name": "route-reply",
        "start": "mood",
        "nodes": [
            {
                "id": "mood",
                "type": "sentiment",
                "config": {"text": "{{ input.reply }}"},
                "next": "route",
            },
            {
                "id": "route",
                "type": "condition",
                "config": {
                    "cases": [
                        {"when": "steps.mood.output.label == 'positive'", "next": "sales"},
                        {"when": "steps.mood.output.label == 'negative'", "next": "support"},
                    ],
                    "default": "follow_up",
                },
            },
            {"id": "sales", "type": "end", "config": {"output": "sales"}},
            {"id": "support", "type": "end", "config": {"output": "support"}},
            {"id": "follow_up", "type": "end", "config": {"output": "follow_up"}},
        ],
    }
    routes = {}
    for reply in (
        "Great, I would love a call next week!",
        "Stop emailing me, this is useless and annoying.",
        "I received your email.",
    ):
        detail = await run_definition(container, definition, {"reply": reply})
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
        mood = next(s for s in detail.steps if s.node_id == "mood")
        routes[detail.run.output] = mood.output["label"]
    assert routes == {"sales": "positive", "support": "negative", "follow_up": "neutral"}
