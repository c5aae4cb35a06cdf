"""The credentials table on both backends: CRUD, versions, one-transaction re-encryption and
a ciphertext moved to another row."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from flowyard.domain.credentials import CredentialRecord, CredentialType, StoredCredential
from flowyard.domain.errors import Conflict, NotFound
from flowyard.security import CredentialService, Vault, VaultError
from flowyard.security.vault import vault_key
from flowyard.store import Store, normalize_url
from flowyard.store.schema import credentials

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORIGINS = ["https://api.example.com"]


def clock() -> datetime:
    return NOW


def service(store: Store, master: bytes | None = None, *previous: bytes) -> CredentialService:
    vault = Vault(vault_key(master or secrets.token_bytes(32)), [vault_key(p) for p in previous])
    return CredentialService(store, vault, clock=clock)


async def test_create_get_list_update_delete(store: Store) -> None:
    svc = service(store)
    made = await svc.create(
        "erp",
        CredentialType.BASIC,
        {"username": "u", "password": "pw-11111111"},
        actor="user:a",
        allowed_origins=ORIGINS,
    )
    assert made.data == {"username": "u", "password": "********"}
    assert made.record.id.startswith("cred_") and made.record.version == 1
    for ref in ("erp", made.record.id):
        got = await svc.get(ref)
        assert got.record == made.record and got.data == made.data
    await svc.create(
        "tok", CredentialType.BEARER, {"token": "t-111111111"}, allowed_origins=ORIGINS
    )
    await svc.create(
        "a-key", CredentialType.API_KEY_HEADER, {"value": "v-11111111"}, allowed_origins=ORIGINS
    )

    names = [v.record.name for v in await svc.list()]
    assert names == ["a-key", "erp", "tok"]
    assert [v.record.name for v in await svc.list(limit=1, after="a-key")] == ["erp"]
    assert [v.record.name for v in await svc.list(type_=CredentialType.BEARER)] == ["tok"]

    with pytest.raises(Conflict):
        await svc.create(
            "erp", CredentialType.BEARER, {"token": "x-11111111"}, allowed_origins=ORIGINS
        )

    updated = await svc.update("erp", data={"username": "u2", "password": "pw-22222222"})
    assert updated.record.version == 2 and updated.data == {
        "username": "u2",
        "password": "********",
    }
    described = await svc.update("erp", description="ERP", expected_version=2)
    assert described.record.version == 3 and described.record.description == "ERP"
    assert described.data == updated.data
    with pytest.raises(Conflict):
        await svc.update("erp", description="stale", expected_version=2)
    cleared = await svc.update("erp", description=None)
    assert cleared.record.description is None

    resolved = await svc.resolver(ttl_s=0).get("erp")
    assert resolved.values == {"username": "u2", "password": "pw-22222222"}

    await svc.delete("erp")
    with pytest.raises(NotFound):
        await svc.get("erp")
    with pytest.raises(NotFound):
        await svc.delete("erp")


async def test_a_ciphertext_moved_to_another_row_is_refused(store: Store, db_url: str) -> None:
    svc = service(store)
    a = await svc.create(
        "a", CredentialType.BEARER, {"token": "token-of-a"}, allowed_origins=ORIGINS
    )
    b = await svc.create(
        "b", CredentialType.BEARER, {"token": "token-of-b"}, allowed_origins=ORIGINS
    )
    engine = create_async_engine(normalize_url(db_url))
    try:
        async with engine.begin() as conn:
            blob = (
                await conn.execute(
                    sa.select(credentials.c.ciphertext).where(credentials.c.id == a.record.id)
                )
            ).scalar_one()
            await conn.execute(
                credentials.update().where(credentials.c.id == b.record.id).values(ciphertext=blob)
            )
    finally:
        await engine.dispose()
    view = await svc.get("b")
    assert view.data is None and view.problem is not None and "another row" in view.problem
    resolver = svc.resolver(ttl_s=0)
    with pytest.raises(Exception) as info:
        await resolver.get("b")
    assert getattr(info.value, "error_type", None) == "credential.unreadable"
    assert (await resolver.get("a")).values == {"token": "token-of-a"}


async def test_reencrypt_is_all_or_nothing(store: Store) -> None:
    old_master = secrets.token_bytes(32)
    svc = service(store, old_master)
    for n in range(5):
        await svc.create(
            f"c{n}", CredentialType.BEARER, {"token": f"token-{n:03}"}, allowed_origins=ORIGINS
        )
    calls = 0

    def explode(stored: StoredCredential) -> tuple[bytes, str] | None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise VaultError("boom")
        return b"\x01garbage", "ffffffffffffffff"

    with pytest.raises(VaultError):
        await store.reencrypt_credentials(explode)
    before = {v.record.name: v.record.key_id for v in await svc.list()}
    assert set(before.values()) == {svc.vault.key_id}  # nothing changed

    new_master = secrets.token_bytes(32)
    rotation = await svc.vault.rotate(store, new_master)
    assert rotation.reencrypted == 5
    fresh = service(store, new_master)  # the new key alone reads everything
    for n in range(5):
        view = await fresh.get(f"c{n}")
        assert view.record.key_id == rotation.key_id != before[f"c{n}"]
        assert view.record.version == 1  # rotation does not change the data
        assert (await fresh.resolver(ttl_s=0).get(f"c{n}")).values == {"token": f"token-{n:03}"}
    again = await svc.vault.rotate(store, new_master)
    assert again.reencrypted == 0


async def test_store_record_round_trip(store: Store) -> None:
    record = CredentialRecord(
        "cred_x", "x", CredentialType.CUSTOM, "d", "k1", NOW, NOW, "cli:me", 1
    )
    assert await store.create_credential(record, b"\x00\x01blob") == record
    stored = await store.get_credential("x")
    assert stored == StoredCredential(record, b"\x00\x01blob")
    origins = await store.update_credential(
        "cred_x", {"allowed_origins": ["https://a.example", "https://*.b.example"]}, NOW
    )
    assert origins.record.allowed_origins == ("https://a.example", "https://*.b.example")
    assert (
        await store.get_credential("x")
    ).record.allowed_origins == origins.record.allowed_origins
    with pytest.raises(ValueError):
        await store.update_credential("cred_x", {"name": "y"}, NOW)
    with pytest.raises(NotFound):
        await store.update_credential("cred_nope", {"description": "y"}, NOW)
