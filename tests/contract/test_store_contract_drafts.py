"""The store contract for drafts: open, edit with revisions, undo/redo history, publish.

Every test runs on SQLite and on PostgreSQL through the ``store`` fixture."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contract.helpers import definition, make_workflow
from flowyard.domain.drafts import NewDraftStep
from flowyard.domain.errors import Conflict, NotFound, PreconditionFailed
from flowyard.store import Store


def document(name: str = "lead-routing", *nodes: str) -> dict[str, Any]:
    return {"definition": definition(name, *nodes), "layout": {"nodes": {}}}


def step(n: int) -> NewDraftStep:
    add = {"op": "add", "path": "/definition/description", "value": f"v{n}"}
    return NewDraftStep([add], [{"op": "remove", "path": "/definition/description"}], f"edit {n}")


async def test_open_get_and_a_second_open_is_a_conflict(store: Store) -> None:
    wf = await make_workflow(store)
    draft = await store.open_draft(wf.id, document(), 1, "ann")
    assert (draft.revision, draft.base_version, draft.etag) == (1, 1, '"d1"')
    got = await store.get_draft(wf.id)
    assert got.document == document()
    assert (got.undo_depth, got.redo_depth, got.created_by) == (0, 0, "ann")
    with pytest.raises(Conflict, match="already has a draft"):
        await store.open_draft(wf.id, document(), 1, "bob")
    with pytest.raises(NotFound):
        await store.get_draft((await make_workflow(store, "other")).id)


async def test_edits_need_the_current_revision(store: Store) -> None:
    wf = await make_workflow(store)
    await store.open_draft(wf.id, document(), 1, "ann")
    edited = await store.record_draft_edit(
        wf.id, 1, document("lead-routing", "a"), step(1), "ann", max_steps=100
    )
    assert (edited.revision, edited.undo_depth) == (2, 1)
    with pytest.raises(PreconditionFailed, match='"d2"'):
        await store.record_draft_edit(wf.id, 1, document(), step(2), "bob", max_steps=100)
    assert (await store.get_draft(wf.id)).document == document("lead-routing", "a")


async def test_of_two_editors_with_one_etag_exactly_one_wins(store: Store) -> None:
    wf = await make_workflow(store)
    await store.open_draft(wf.id, document(), 1, "ann")
    results = await asyncio.gather(
        *(
            store.record_draft_edit(
                wf.id, 1, document("lead-routing", f"n{i}"), step(i), f"u{i}", max_steps=100
            )
            for i in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, PreconditionFailed) for r in results if isinstance(r, BaseException))
    assert (await store.get_draft(wf.id)).undo_depth == 1


async def test_undo_redo_and_a_new_edit_drops_the_redo_tail(store: Store) -> None:
    wf = await make_workflow(store)
    await store.open_draft(wf.id, document(), 1, "ann")
    for n in range(3):
        await store.record_draft_edit(wf.id, n + 1, document(), step(n), "ann", max_steps=100)
    top = await store.draft_step(wf.id, "undo")
    assert top is not None and (top.seq, top.summary, top.undone) == (3, "edit 2", False)
    assert await store.draft_step(wf.id, "redo") is None
    moved = await store.record_draft_move(wf.id, 4, document(), 3, True, "ann")
    assert (moved.revision, moved.undo_depth, moved.redo_depth) == (5, 2, 1)
    with pytest.raises(Conflict, match="already undone"):
        await store.record_draft_move(wf.id, 5, document(), 3, True, "ann")
    redo = await store.draft_step(wf.id, "redo")
    assert redo is not None and redo.seq == 3
    edited = await store.record_draft_edit(wf.id, 5, document(), step(9), "bob", max_steps=100)
    assert (edited.undo_depth, edited.redo_depth) == (3, 0)
    history = await store.list_draft_steps(wf.id)
    assert [(s.seq, s.summary, s.actor) for s in history] == [
        (3, "edit 9", "bob"),
        (2, "edit 1", "ann"),
        (1, "edit 0", "ann"),
    ]
    assert history[0].forward == step(9).forward and history[0].inverse == step(9).inverse


async def test_history_keeps_at_most_max_steps(store: Store) -> None:
    wf = await make_workflow(store)
    await store.open_draft(wf.id, document(), 1, None)
    for n in range(7):
        await store.record_draft_edit(wf.id, n + 1, document(), step(n), None, max_steps=3)
    history = await store.list_draft_steps(wf.id)
    assert [s.summary for s in history] == ["edit 6", "edit 5", "edit 4"]


async def test_publish_makes_the_next_version_with_its_layout_and_closes_the_draft(
    store: Store,
) -> None:
    wf = await make_workflow(store)
    await store.open_draft(wf.id, document(), 1, "ann")
    new = definition("lead-routing", "a", "b")
    layout = {"nodes": {"a": {"x": 1, "y": 2}}}
    with pytest.raises(PreconditionFailed):
        await store.publish_draft(wf.id, 7, new, layout, "ann")
    record, version, created = await store.publish_draft(wf.id, 1, new, layout, "ann")
    assert (record.latest_version, version.version, version.layout, created) == (2, 2, layout, True)
    stored = await store.get_version(wf.id, 2)
    assert (stored.definition, stored.layout, stored.created_by) == (new, layout, "ann")
    assert (await store.get_version(wf.id, 1)).layout is None
    with pytest.raises(NotFound):
        await store.get_draft(wf.id)
    assert await store.draft_step(wf.id, "undo") is None


async def test_a_workflow_can_start_as_a_draft(store: Store) -> None:
    record, draft = await store.create_draft_workflow("fresh", None, document("fresh"), "ann")
    assert (record.latest_version, draft.base_version) == (0, None)
    assert (await store.get_workflow("fresh")).latest_version == 0
    with pytest.raises(NotFound):
        await store.get_version(record.id)
    with pytest.raises(Conflict):
        await store.create_draft_workflow("fresh", None, document("fresh"), "bob")
    published, version, created = await store.publish_draft(
        record.id, 1, definition("fresh"), {"nodes": {}}, "ann", expected_latest=0
    )
    assert (published.latest_version, version.version, created) == (1, 1, True)


async def test_publish_refuses_a_draft_overtaken_by_a_save_unless_forced(store: Store) -> None:
    """Opened from version 1, version 2 saved since: publishing would drop version 2's
    change silently (Conflict naming both); without the expectation it publishes."""
    wf = await make_workflow(store)
    await store.open_draft(wf.id, document(), 1, "ann")
    await store.add_version(wf.id, definition("lead-routing", "start", "saved"), "bob")
    new = definition("lead-routing", "a")
    with pytest.raises(Conflict) as refused:
        await store.publish_draft(wf.id, 1, new, {"nodes": {}}, "ann", expected_latest=1)
    assert refused.value.detail == {"base_version": 1, "latest_version": 2}
    assert (await store.get_draft(wf.id)).revision == 1  # kept
    record, version, created = await store.publish_draft(wf.id, 1, new, {"nodes": {}}, "ann")
    assert (record.latest_version, version.version, created) == (3, 3, True)


async def test_an_unchanged_draft_publishes_no_version_but_closes(store: Store) -> None:
    wf = await make_workflow(store)
    same = definition("lead-routing")
    await store.open_draft(wf.id, document(), 1, "ann")
    record, version, created = await store.publish_draft(
        wf.id, 1, same, {"nodes": {}}, "ann", expected_latest=1
    )
    assert (record.latest_version, version.version, created) == (1, 1, False)
    assert version.created_by == "tester"  # the existing version, answered
    with pytest.raises(NotFound):
        await store.get_draft(wf.id)
    # The layout is part of what is published: moving a node is a change.
    await store.open_draft(wf.id, document(), 1, "ann")
    moved = {"nodes": {"start": {"x": 1, "y": 2}}}
    record, version, created = await store.publish_draft(wf.id, 1, same, moved, "ann")
    assert (record.latest_version, version.version, version.layout, created) == (2, 2, moved, True)
    await store.open_draft(wf.id, document(), 2, "ann")
    _, version, created = await store.publish_draft(wf.id, 1, same, moved, "ann")
    assert (version.version, created) == (2, False)


async def test_discard(store: Store) -> None:
    wf = await make_workflow(store)
    await store.open_draft(wf.id, document(), 1, "ann")
    await store.record_draft_edit(wf.id, 1, document(), step(1), "ann", max_steps=100)
    with pytest.raises(PreconditionFailed):
        await store.discard_draft(wf.id, expected_revision=1)
    await store.discard_draft(wf.id, expected_revision=2)
    with pytest.raises(NotFound):
        await store.discard_draft(wf.id)
    with pytest.raises(NotFound):
        await store.list_draft_steps(wf.id)
    assert (await store.open_draft(wf.id, document(), 1, "ann")).undo_depth == 0


async def test_an_edit_reads_and_records_the_draft_in_one_transaction(store: Store) -> None:
    """``apply_draft_edit``: the change sees the document as stored, at the revision asked
    for; a change that raises records nothing; undo and redo move in one transaction too."""
    wf = await make_workflow(store)
    await store.open_draft(wf.id, document(), 1, "ann")
    seen: list[dict[str, Any]] = []

    def change(doc: dict[str, Any]) -> NewDraftStep:
        seen.append(dict(doc["definition"]))
        doc["definition"]["description"] = "v1"
        return step(1)

    with pytest.raises(PreconditionFailed):
        await store.apply_draft_edit(wf.id, 7, change, "ann", max_steps=100)

    def refuse(doc: dict[str, Any]) -> NewDraftStep:
        raise NotFound("no such node")

    with pytest.raises(NotFound):
        await store.apply_draft_edit(wf.id, 1, refuse, "ann", max_steps=100)
    record, made = await store.apply_draft_edit(wf.id, 1, change, "ann", max_steps=100)
    assert seen == [document()["definition"]]
    assert (record.revision, record.undo_depth, made.summary) == (2, 1, "edit 1")
    assert (await store.get_draft(wf.id)).document["definition"]["description"] == "v1"

    def undo(doc: dict[str, Any], moved: Any) -> list[dict[str, Any]]:
        del doc["definition"]["description"]
        return list(moved.inverse)

    record, moved, applied = await store.apply_draft_move(wf.id, 2, "undo", undo, "ann")
    assert (record.revision, record.undo_depth, record.redo_depth, moved.seq) == (3, 0, 1, 1)
    assert applied == [{"op": "remove", "path": "/definition/description"}]
    assert (await store.get_draft(wf.id)).document == document()
    with pytest.raises(Conflict) as nothing:
        await store.apply_draft_move(wf.id, None, "undo", undo, "ann")
    assert nothing.value.detail == {"current_etag": '"d3"'}
