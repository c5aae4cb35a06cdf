"""examples/instagram_keywords.json: a comment with a keyword gets its author a DM, any other
comment a like, through the Meta Graph fake."""

from __future__ import annotations

from fakes.graph import FakeGraph
from flowyard.bootstrap import Container
from flowyard.domain.statuses import RunStatus
from support.samples import COMMENTS, FAN, INSTAGRAM, finished, save_and_start, taken


async def test_a_keyword_gets_a_dm_and_other_comments_a_like(
    worker: Container, graph: FakeGraph
) -> None:
    asking = {
        "sender_id": FAN,
        "comment_id": COMMENTS[0],
        "text": "What's the PRICE?",
        "username": "ada",
    }
    praising = {"sender_id": FAN, "comment_id": COMMENTS[1], "text": "Lovely picture!"}
    dm = await finished(worker, await save_and_start(worker, INSTAGRAM, asking))
    like = await finished(worker, await save_and_start(worker, INSTAGRAM, praising))

    assert dm.run.status is RunStatus.SUCCEEDED, dm.run.error
    assert taken(dm) == ["new_comment", "has_keyword", "send_dm", "messaged"]
    [message] = graph.messages
    assert message["recipient"] == FAN and message["text"].startswith("Hi @ada! Thanks")
    assert dm.run.output == {"action": "dm", "message_id": message["id"], "keywords": ["price"]}

    assert like.run.status is RunStatus.SUCCEEDED, like.run.error
    assert taken(like) == ["new_comment", "has_keyword", "like_comment", "liked"]
    assert graph.likes == [("comment", COMMENTS[1])]
    assert like.run.output == {"action": "like", "comment_id": COMMENTS[1]}
    assert len(graph.messages) == 1


async def test_a_dm_outside_the_24_hour_window_fails_without_retries(
    worker: Container, graph: FakeGraph
) -> None:
    late = "1234500000000009"
    graph.closed_window.add(late)
    comment = {"sender_id": late, "comment_id": COMMENTS[0], "text": "info please"}
    detail = await finished(worker, await save_and_start(worker, INSTAGRAM, comment))

    assert detail.run.status is RunStatus.FAILED
    assert detail.run.error is not None
    assert detail.run.error["type"] == "instagram.10_2018278"
    assert len(graph.requests) == 1 and graph.messages == [] and graph.likes == []
