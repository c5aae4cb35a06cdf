"""The master key (env or 0600 key file, HKDF sub-keys) and the first-start admin."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from flowyard.api import create_app
from flowyard.api.app import first_start
from flowyard.bootstrap import Container
from flowyard.security import MasterKeyError, derive_key, load_master_key
from flowyard.settings import Settings


def test_key_file_is_created_0600_next_to_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWYARD_SECRET_KEY")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'data.db'}")
    key = load_master_key(settings)
    path = tmp_path / "data.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32
    assert load_master_key(settings) == key  # read back, not regenerated
    os.chmod(path, 0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        load_master_key(settings)


def test_secret_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWYARD_SECRET_KEY", "ab" * 32)
    assert load_master_key(Settings()) == bytes.fromhex("ab" * 32)
    monkeypatch.setenv("FLOWYARD_SECRET_KEY", "ab" * 8)
    with pytest.raises(MasterKeyError, match="at least 32"):
        load_master_key(Settings())


def test_sub_keys_differ_per_purpose() -> None:
    master = b"k" * 32
    assert derive_key(master, "jwt") != derive_key(master, "vault")
    assert derive_key(master, "jwt") == derive_key(master, "jwt")
    assert master not in derive_key(master, "jwt")


async def test_first_start_creates_admin_once(
    container: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    await first_start(container)
    printed = capsys.readouterr().err
    assert "created user 'admin'" in printed
    password = printed.split("password ", 1)[1].split()[0]
    app = create_app(container.settings, container=container)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.post(
            "/api/v1/auth/token", data={"username": "admin", "password": password}
        )
        assert response.status_code == 200
    await first_start(container)
    assert capsys.readouterr().err == ""
    assert [u.username for u in await container.store.list_users()] == ["admin"]


async def test_first_start_with_a_given_password(
    container: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    container.settings = container.settings.model_copy(
        update={"admin_password": SecretStr("given-admin-password")}
    )
    await first_start(container)
    assert capsys.readouterr().err == ""
    pair = await container.auth.login("admin", "given-admin-password")
    assert pair.access_token
