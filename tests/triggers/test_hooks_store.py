"""The hook store on SQLite and PostgreSQL: hooks by id, name and path; conflicts; the
delivery ids a hook remembers for its window."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from contract.helpers import T0, make_workflow
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.hooks import HookAuth, HookChange, HookConfig, HookScheme, NewHook, is_hook_id
from flowyard.store import Store

CONFIG = HookConfig(auth=HookAuth(scheme=HookScheme.HMAC, credential="s"))


async def test_hooks_by_id_name_and_path(store: Store) -> None:
    wf = await make_workflow(store)
    made = await store.create_hook(NewHook("a", wf.id, "a-path", True, CONFIG, "user:x"), T0)
    assert is_hook_id(made.id) and made.workflow_name == wf.name
    assert (await store.get_hook(made.id)).name == "a"
    assert (await store.get_hook("a")).id == made.id
    assert (await store.get_hook_by_path("a-path")).id == made.id
    with pytest.raises(Conflict):
        await store.create_hook(NewHook("a", wf.id, None, True, CONFIG, None), T0)
    with pytest.raises(Conflict):
        await store.create_hook(NewHook("b", wf.id, "a-path", True, CONFIG, None), T0)
    other = await store.create_hook(NewHook("b", wf.id, None, True, CONFIG, None), T0)
    assert other.id != made.id
    changed = await store.update_hook("a", HookChange(enabled=False, clear_path=True), T0)
    assert (changed.enabled, changed.path) == (False, None)
    with pytest.raises(NotFound):
        await store.get_hook_by_path("a-path")
    assert [h.name for h in await store.list_hooks()] == ["a", "b"]
    assert [h.name for h in await store.list_hooks(after="a")] == ["b"]
    await store.delete_hook(made.id)
    with pytest.raises(NotFound):
        await store.get_hook("a")
    with pytest.raises(NotFound):
        await store.delete_hook("a")


async def test_a_delivery_id_is_remembered_for_its_window(store: Store) -> None:
    wf = await make_workflow(store)
    hook = await store.create_hook(NewHook("a", wf.id, None, True, CONFIG, None), T0)
    assert await store.delivery_window(hook.id, "k1", T0) is None
    first = await store.note_delivery(hook.id, "k1", T0, 60)
    assert first == T0
    assert await store.delivery_window(hook.id, "k1", T0 + timedelta(seconds=59)) == T0
    assert await store.delivery_window(hook.id, "k1", T0 + timedelta(seconds=60)) is None
    assert await store.note_delivery(hook.id, "k1", T0 + timedelta(seconds=59), 60) == T0
    assert await store.note_delivery(hook.id, "k2", T0 + timedelta(seconds=1), 60) != T0
    later = T0 + timedelta(seconds=61)
    assert await store.note_delivery(hook.id, "k1", later, 60) == later  # a new window
    # Concurrent repeats of one id agree on its window.
    starts = await asyncio.gather(
        *(store.note_delivery(hook.id, "k3", T0 + timedelta(seconds=i), 60) for i in range(5))
    )
    assert len(set(starts)) == 1
    await store.delete_hook(hook.id)  # and its deliveries with it
