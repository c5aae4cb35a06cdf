"""The store contract, security part: users by id or by name (never either), live sessions
of access tokens, audit entries written with the change they are given to (and the target
of a refused create), and the failed-login counters shared
by API processes (atomic claims, forgiving, forgetting, pruning)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from contract.helpers import T0, at, raw_connection
from flowyard.domain.auth import (
    ApiKeyRecord,
    AuditEntry,
    LoginFailures,
    RefreshTokenRecord,
    Role,
)
from flowyard.domain.errors import Conflict, NotFound
from flowyard.store import Store, open_store
from flowyard.store.schema import login_failures, users

KEYS = ["user:abc@10.0.0.1", "addr:10.0.0.1"]


def no_wait(_: Sequence[LoginFailures]) -> float:
    return 0.0


async def test_users_by_id_and_by_name_never_either(store: Store) -> None:
    first = await store.create_user("usr_1", "ada", "h", Role.ADMIN, T0)
    # A user named exactly like the first one's id.
    second = await store.create_user("usr_2", "usr_1", "h", Role.VIEWER, T0)
    assert (await store.get_user_by_id("usr_1")).username == "ada"
    assert (await store.get_user_by_name("usr_1")).id == second.id
    assert (await store.get_user_by_name("ada")).id == first.id
    with pytest.raises(NotFound):
        await store.get_user_by_id("ada")
    with pytest.raises(NotFound):
        await store.get_user_by_name("usr_2")


async def test_a_refused_create_names_the_existing_user_in_the_audit(store: Store) -> None:
    made = await store.create_user("usr_1", "ada", "h", Role.VIEWER, T0)
    entry = AuditEntry("user.create", "user:root", "user")
    with pytest.raises(Conflict):
        await store.create_user("usr_9", "ada", "h", Role.VIEWER, T0, audit=entry)
    assert not entry.written
    assert (entry.target_type, entry.target_id) == ("user", made.id)


async def test_a_write_audits_only_the_entry_it_is_given_and_only_once(store: Store) -> None:
    # Without an entry (a worker's writes, bookkeeping) nothing is audited.
    await store.create_user("usr_1", "ada", "h", Role.VIEWER, T0)
    assert await store.list_audit() == []
    entry = AuditEntry("user.update", "user:root", "user", "usr_1")
    await store.update_user("usr_1", {"role": Role.EDITOR}, at(1), audit=entry)
    assert entry.written
    # A second write handed the same (written) entry does not repeat it.
    await store.update_user("usr_1", {"role": Role.ADMIN}, at(2), audit=entry)
    [row] = await store.list_audit()
    assert (row.action, row.actor, row.target_id) == ("user.update", "user:root", "usr_1")
    # A change that rolls back takes its entry with it: it stays unwritten.
    refused = AuditEntry("user.create", "user:root", "user")
    with pytest.raises(Conflict):
        await store.create_user("usr_2", "ada", "h", Role.VIEWER, at(3), audit=refused)
    assert not refused.written
    assert len(await store.list_audit()) == 1


async def test_a_session_is_live_until_its_family_is_revoked(store: Store) -> None:
    user = await store.create_user("usr_1", "ada", "h", Role.VIEWER, T0)
    other = await store.create_user("usr_2", "bob", "h", Role.VIEWER, T0)
    await store.add_refresh_token(RefreshTokenRecord("t1", "fam1", user.id, at(3600), None, None))
    await store.add_refresh_token(RefreshTokenRecord("t2", "fam2", user.id, at(3600), None, None))
    assert await store.session_user(user.id, "fam1") == (user, True)
    # A family of another user, or none at all, is no session of this one.
    assert (await store.session_user(other.id, "fam1"))[1] is False
    assert (await store.session_user(user.id, "nosuch"))[1] is False
    # Rotation keeps the session live.
    new = RefreshTokenRecord("t3", "ignored", user.id, at(7200), None, None)
    assert await store.rotate_refresh_token("t1", new, at(10)) == "ok"
    assert (await store.session_user(user.id, "fam1"))[1] is True
    # Logout ends one session; a new password ends them all.
    await store.revoke_refresh_family("fam1", at(20))
    assert (await store.session_user(user.id, "fam1"))[1] is False
    assert (await store.session_user(user.id, "fam2"))[1] is True
    await store.update_user(user.id, {"password_hash": "h2"}, at(30))
    assert (await store.session_user(user.id, "fam2"))[1] is False
    with pytest.raises(NotFound):
        await store.session_user("usr_9", "fam2")


async def test_claims_count_and_a_wait_changes_nothing(store: Store) -> None:
    seen: list[list[tuple[str, int]]] = []

    def record(counts: Sequence[LoginFailures]) -> float:
        seen.append([(c.key, c.failures) for c in counts])
        return 0.0

    for n in range(3):
        assert await store.claim_login_attempt(KEYS, at(n), forget_before=T0, wait=record) == 0
    # In the keys' order, the counts before each attempt.
    assert seen == [[(KEYS[0], n), (KEYS[1], n)] for n in range(3)]
    rows = await store.login_failures(KEYS)
    assert [(r.key, r.failures, r.first_at, r.last_at) for r in rows] == [
        (KEYS[1], 3, T0, at(2)),
        (KEYS[0], 3, T0, at(2)),
    ]
    waited = await store.claim_login_attempt(KEYS, at(3), forget_before=T0, wait=lambda _: 4.5)
    assert waited == 4.5
    assert await store.login_failures(KEYS) == rows  # a refused attempt counts nothing


async def test_counts_older_than_the_window_are_forgotten(store: Store) -> None:
    for n in range(3):
        await store.claim_login_attempt(KEYS, at(n), forget_before=T0, wait=no_wait)
    seen: list[int] = []

    def record(counts: Sequence[LoginFailures]) -> float:
        seen.extend(c.failures for c in counts)
        return 0.0

    await store.claim_login_attempt(KEYS, at(1000), forget_before=at(100), wait=record)
    assert seen == [0, 0]
    rows = await store.login_failures(KEYS)
    assert {(r.failures, r.first_at, r.last_at) for r in rows} == {(1, at(1000), at(1000))}
    assert await store.prune_login_failures(at(1000)) == 0
    assert await store.prune_login_failures(at(1001)) == 2
    assert await store.login_failures(KEYS) == []


async def test_forgiving_clears_one_key_and_takes_one_attempt_back_from_another(
    store: Store,
) -> None:
    for n in range(2):
        await store.claim_login_attempt(KEYS, at(n), forget_before=T0, wait=no_wait)
    await store.forgive_login_attempt([KEYS[0]], [KEYS[1]])
    assert [(r.key, r.failures) for r in await store.login_failures(KEYS)] == [(KEYS[1], 1)]
    await store.forgive_login_attempt([], [KEYS[1]])
    assert await store.login_failures(KEYS) == []  # no failure left: no row


async def test_parallel_claims_from_separate_processes_serialise(store: Store, db_url: str) -> None:
    """Eight stores (eight API processes) claim at once: the policy sees every earlier claim,
    so only the free attempts pass, even for keys that had no row yet."""
    stores = [open_store(db_url, pool_size=2) for _ in range(8)]

    def three_free(counts: Sequence[LoginFailures]) -> float:
        return 0.0 if all(c.failures < 3 for c in counts) else 1.0

    try:
        for own in stores:
            await own.ping()
        waits = await asyncio.gather(
            *(
                own.claim_login_attempt(KEYS, at(1), forget_before=T0, wait=three_free)
                for own in stores
                for _ in range(3)
            )
        )
    finally:
        for own in stores:
            await own.close()
    assert sorted(waits) == [0.0] * 3 + [1.0] * 21
    assert {r.failures for r in await store.login_failures(KEYS)} == {3}


async def _lock_waiters(conn: AsyncConnection) -> int:
    """How many sessions of this PostgreSQL database wait for a lock (the statistics are
    read afresh: a transaction otherwise sees the first snapshot it took)."""
    await conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return int((await conn.execute(query)).scalar_one())


async def _until_waiting(watch: AsyncConnection, count: int) -> None:
    for _ in range(500):
        if await _lock_waiters(watch) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {count} transactions waiting for a lock")


@pytest.mark.parametrize("ending", ["logout", "password", "disable"])
async def test_a_session_ended_during_a_rotation_stays_ended(
    store: Store, db_url: str, ending: str
) -> None:
    """A rotation and an ending of its session (logout, new password, disabled user) at
    once: whichever comes first, no live refresh token is left in the session. On
    PostgreSQL the rotation is held after it locked its token (another transaction holds
    the user's row), and the ending starts meanwhile: it must not miss the token the
    rotation then inserts. SQLite serialises writers, so there both simply run at once."""
    user = await store.create_user("usr_1", "ada", "h", Role.VIEWER, T0)
    await store.add_refresh_token(RefreshTokenRecord("t1", "fam1", user.id, at(3600), None, None))
    new = RefreshTokenRecord("t2", "fam1", user.id, at(7200), None, None)

    async def end() -> None:
        if ending == "logout":
            await store.revoke_refresh_family("fam1", at(10))
        elif ending == "password":
            await store.update_user(user.id, {"password_hash": "h2"}, at(10))
        else:
            await store.update_user(user.id, {"disabled": True}, at(10))

    if not db_url.startswith("postgresql"):
        outcomes = await asyncio.gather(store.rotate_refresh_token("t1", new, at(10)), end())
    else:
        async with raw_connection(db_url) as holder, raw_connection(db_url) as watch:
            await holder.execute(
                sa.select(users.c.id).where(users.c.id == user.id).with_for_update()
            )
            rotation = asyncio.create_task(store.rotate_refresh_token("t1", new, at(10)))
            await _until_waiting(watch, 1)
            ending_task = asyncio.create_task(end())
            await _until_waiting(watch, 2)
            await holder.rollback()
            outcomes = await asyncio.wait_for(asyncio.gather(rotation, ending_task), 30)
    assert outcomes[0] in ("ok", "invalid")
    assert (await store.session_user(user.id, "fam1"))[1] is False
    again = RefreshTokenRecord("t3", "fam1", user.id, at(7200), None, None)
    assert await store.rotate_refresh_token("t2", again, at(20)) == "invalid"


async def test_forgiving_locks_in_the_order_claims_do(pg_url: str) -> None:
    """PostgreSQL only (SQLite writers never overlap): a claim locks its keys in sorted order
    (the address key before the pair key); a successful login's forgiving must take them in
    the same order, or a claim from the same address and the forgiving deadlock. Here the
    claim is played by a transaction that holds the address key, and asks for the pair key
    once the forgiving waits (a short deadlock_timeout makes it the one that would see a
    deadlock)."""
    store = open_store(pg_url)
    try:
        await store.migrate()
        pair, address = KEYS
        for n in range(2):
            await store.claim_login_attempt(KEYS, at(n), forget_before=T0, wait=no_wait)
        async with raw_connection(pg_url) as claim, raw_connection(pg_url) as watch:
            await claim.execute(sa.text("SET LOCAL deadlock_timeout = '50ms'"))
            locked = sa.select(login_failures.c.key).with_for_update()
            await claim.execute(locked.where(login_failures.c.key == address))
            forgiving = asyncio.create_task(store.forgive_login_attempt([pair], [address]))
            await _until_waiting(watch, 1)
            await claim.execute(locked.where(login_failures.c.key == pair))
            await claim.commit()
            await asyncio.wait_for(forgiving, 30)
        assert [(r.key, r.failures) for r in await store.login_failures(KEYS)] == [(address, 1)]
    finally:
        await store.close()


async def test_pruning_drops_ended_and_expired_refresh_tokens_in_batches(store: Store) -> None:
    user = await store.create_user("usr_1", "ada", "h", Role.VIEWER, T0)
    for n in range(5):  # expired
        await store.add_refresh_token(RefreshTokenRecord(f"x{n}", "f1", user.id, at(n), None, None))
    await store.add_refresh_token(RefreshTokenRecord("r1", "f2", user.id, at(900), None, None))
    await store.revoke_refresh_family("f2", at(1))  # ended
    await store.add_refresh_token(RefreshTokenRecord("u1", "f3", user.id, at(900), None, None))
    new = RefreshTokenRecord("u2", "f3", user.id, at(900), None, None)
    assert await store.rotate_refresh_token("u1", new, at(1)) == "ok"  # u1 used, kept
    assert await store.prune_refresh_tokens(at(10), limit=4) == 4
    assert await store.prune_refresh_tokens(at(10), limit=4) == 2
    assert await store.prune_refresh_tokens(at(10), limit=4) == 0
    # The used token still tells a reuse; the session is live.
    assert (await store.session_user(user.id, "f3"))[1] is True
    again = RefreshTokenRecord("u3", "f3", user.id, at(900), None, None)
    assert await store.rotate_refresh_token("u1", again, at(11)) == "reused"


async def test_an_api_key_is_found_with_its_owner(store: Store) -> None:
    owner = await store.create_user("usr_1", "ada", "h", Role.EDITOR, T0)
    owned = ApiKeyRecord("key_1", "p1", "h1", "ci", Role.ADMIN, owner.id, None, None, None, T0)
    orphan = ApiKeyRecord("key_2", "p2", "h2", "cli", Role.VIEWER, None, None, None, None, T0)
    await store.create_api_key(owned)
    await store.create_api_key(orphan)
    assert await store.find_api_key_and_owner("p1") == (owned, owner)
    assert await store.find_api_key_and_owner("p2") == (orphan, None)
    assert await store.find_api_key_and_owner("nosuch") is None
    disabled = await store.update_user(owner.id, {"disabled": True}, at(1))
    assert await store.find_api_key_and_owner("p1") == (owned, disabled)
