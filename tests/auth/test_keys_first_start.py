"""The master key (env or 0600 key file, HKDF sub-keys) and the first-start admin."""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from flowyard.api import create_app
from flowyard.api.app import first_start
from flowyard.bootstrap import Container
from flowyard.security import MasterKeyError, derive_key, keys, load_master_key
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


def test_a_failed_key_file_write_leaves_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash or a full disk while the key file is written must not leave an empty or
    truncated key file behind (every later start would refuse it, or use a different key):
    the file appears whole, or not at all."""
    monkeypatch.delenv("FLOWYARD_SECRET_KEY")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'data.db'}")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(keys.os, "fdopen", full_disk)
        with pytest.raises(MasterKeyError, match="No space left"):
            load_master_key(settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    key = load_master_key(settings)
    assert load_master_key(settings) == key


def _load_in_process(db_url: str) -> str:
    os.environ.pop("FLOWYARD_SECRET_KEY", None)
    return load_master_key(Settings(db_url=db_url)).hex()


def test_processes_starting_together_share_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes that start at once all end with the one key that was written (none reads a
    half-written file)."""
    monkeypatch.delenv("FLOWYARD_SECRET_KEY")
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        for attempt in range(5):
            db_url = f"sqlite:///{tmp_path / f'data{attempt}.db'}"
            found = pool.map(_load_in_process, [db_url] * 8)
            assert len(set(found)) == 1
            assert bytes.fromhex(found[0]) == load_master_key(Settings(db_url=db_url))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_file_system_without_hard_links_still_gets_a_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWYARD_SECRET_KEY")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'data.db'}")

    def no_links(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(keys.os, "link", no_links)
    key = load_master_key(settings)
    assert [p.name for p in tmp_path.iterdir()] == ["data.key"]
    assert stat.S_IMODE((tmp_path / "data.key").stat().st_mode) == 0o600
    assert load_master_key(settings) == key
