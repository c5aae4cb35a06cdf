"""``flowyard credentials ...`` and the master-key rotation, in key-file mode (including a
crash between the database commit and the file renames) and in FLOWYARD_SECRET_KEY mode."""

from __future__ import annotations

import asyncio
import json
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowyard.bootstrap import build
from flowyard.cli.main import app
from flowyard.domain.auth import Role
from flowyard.domain.credentials import CredentialType
from flowyard.security import AuthError
from flowyard.security.keycheck import LostMasterKey
from flowyard.security.keys import read_key_file, write_key_file
from flowyard.security.vault import key_id_of, vault_key
from flowyard.settings import Settings
from support.auth import SECRET_KEY

SECRET = "cli-secret-3a1b2c3d4e5f"
NAMES = ("a-token", "b-basic", "c-custom")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Key-file mode: no FLOWYARD_SECRET_KEY, a key file in tmp_path."""
    path = tmp_path / "keys" / "flowyard.key"
    monkeypatch.delenv("FLOWYARD_SECRET_KEY", raising=False)
    monkeypatch.setenv("FLOWYARD_KEY_FILE", str(path))
    yield path


def settings(db_url: str, **extra: object) -> Settings:
    return Settings(db_url=db_url, load_plugins=False, **extra)  # type: ignore[arg-type]


async def _seed(db_url: str) -> dict[str, str]:
    container = await build(settings(db_url))
    try:
        svc = container.credentials
        origins = ["https://api.example.com"]
        await svc.create(
            NAMES[0], CredentialType.BEARER, {"token": SECRET}, allowed_origins=origins
        )
        await svc.create(
            NAMES[1],
            CredentialType.BASIC,
            {"username": "u", "password": SECRET},
            allowed_origins=origins,
        )
        await svc.create(NAMES[2], CredentialType.CUSTOM, {"k": SECRET}, allowed_origins=origins)
        return {v.record.name: v.record.key_id for v in await svc.list()}
    finally:
        await container.close()


async def _read_all(db_url: str, **extra: object) -> dict[str, str]:
    """key id of every credential, after checking that each decrypts to its secret."""
    container = await build(settings(db_url, **extra))
    try:
        resolver = container.credentials.resolver(ttl_s=0)
        for name in NAMES:
            resolved = await resolver.get(name)
            assert SECRET in resolved.secrets
        return {v.record.name: v.record.key_id for v in await container.credentials.list()}
    finally:
        await container.close()


def seed(db_url: str) -> dict[str, str]:
    return asyncio.run(_seed(db_url))


def read_all(db_url: str, **extra: object) -> dict[str, str]:
    return asyncio.run(_read_all(db_url, **extra))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_rotate_key_file(db_url: str, key_file: Path, runner: CliRunner) -> None:
    before = seed(db_url)
    old_key = read_key_file(key_file)
    assert set(before.values()) == {key_id_of(vault_key(old_key))}

    result = runner.invoke(app, ["credentials", "rotate-key", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 3 credential(s)" in result.stdout

    new_key = read_key_file(key_file)
    old_file, new_file = (
        key_file.with_name("flowyard.key.old"),
        key_file.with_name("flowyard.key.new"),
    )
    assert new_key != old_key and read_key_file(old_file) == old_key
    assert not new_file.exists()
    assert mode(key_file) == mode(old_file) == 0o600
    after = read_all(db_url)
    assert set(after.values()) == {key_id_of(vault_key(new_key))}
    assert all(after[n] != before[n] for n in NAMES)
    old_file.unlink()  # the new key alone reads everything
    assert read_all(db_url) == after


def test_a_crash_after_the_commit_leaves_everything_readable(
    db_url: str, key_file: Path, runner: CliRunner
) -> None:
    seed(db_url)
    old_key = read_key_file(key_file)
    new_file = key_file.with_name("flowyard.key.new")

    # Crash right after writing <keyfile>.new: rows are still under the old key.
    new_key = secrets.token_bytes(32)
    write_key_file(new_file, new_key)
    assert set(read_all(db_url).values()) == {key_id_of(vault_key(old_key))}

    # Crash right after the database commit, before any rename.
    async def rotate_db_only() -> None:
        container = await build(settings(db_url))
        try:
            await container.credentials.vault.rotate(container.store, new_key)
        finally:
            await container.close()

    asyncio.run(rotate_db_only())
    assert read_key_file(key_file) == old_key  # nothing renamed
    assert set(read_all(db_url).values()) == {key_id_of(vault_key(new_key))}

    # Running the command again finishes the rotation with the same new key.
    result = runner.invoke(app, ["credentials", "rotate-key", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and "re-encrypted 0" in result.stdout
    assert read_key_file(key_file) == new_key and not new_file.exists()
    key_file.with_name("flowyard.key.old").unlink()
    assert set(read_all(db_url).values()) == {key_id_of(vault_key(new_key))}


def test_rotate_with_secret_key_env(
    db_url: str, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db_url)
    refused = runner.invoke(app, ["credentials", "rotate-key", "--db", db_url])
    assert refused.exit_code == 1 and "FLOWYARD_NEW_SECRET_KEY" in refused.stderr

    new_key = secrets.token_hex(32)
    monkeypatch.setenv("FLOWYARD_NEW_SECRET_KEY", new_key)
    result = runner.invoke(app, ["credentials", "rotate-key", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "FLOWYARD_PREVIOUS_SECRET_KEYS" in result.stderr
    assert new_key not in result.output and SECRET_KEY not in result.output
    monkeypatch.delenv("FLOWYARD_NEW_SECRET_KEY")

    # The new key alone reads everything; with the old key alone nothing is readable.
    after = read_all(db_url, secret_key=new_key)
    assert set(after.values()) == {key_id_of(vault_key(bytes.fromhex(new_key)))}
    assert read_all(db_url, secret_key=new_key, previous_secret_keys=SECRET_KEY) == after

    # A process that starts on the old key alone is refused; one that was already running
    # (built before the rotation: no start check) reads nothing.
    with pytest.raises(LostMasterKey, match="FLOWYARD_SECRET_KEY is not the key"):
        asyncio.run(build(settings(db_url, secret_key=SECRET_KEY)))

    async def with_old_key_only() -> str:
        container = await build(settings(db_url, secret_key=SECRET_KEY), check_keys=False)
        try:
            view = await container.credentials.get(NAMES[0])
            return view.problem or ""
        finally:
            await container.close()

    assert "no vault key with id" in asyncio.run(with_old_key_only())

    # A process still on the old key writes a row under it; ``reencrypt`` moves it over.
    async def late_write() -> None:
        container = await build(settings(db_url, secret_key=SECRET_KEY), check_keys=False)
        try:
            await container.credentials.create(
                "late", CredentialType.BEARER, {"token": SECRET}, allowed_origins=["https://x.io"]
            )
        finally:
            await container.close()

    asyncio.run(late_write())
    monkeypatch.setenv("FLOWYARD_SECRET_KEY", new_key)
    monkeypatch.setenv("FLOWYARD_PREVIOUS_SECRET_KEYS", SECRET_KEY)
    moved = runner.invoke(app, ["credentials", "reencrypt", "--db", db_url])
    assert moved.exit_code == 0, moved.output
    assert "re-encrypted 1 credential(s)" in moved.stdout
    monkeypatch.delenv("FLOWYARD_PREVIOUS_SECRET_KEYS")
    assert len(set(read_all(db_url, secret_key=new_key).values())) == 1


def test_rotation_logs_users_out(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JWT key is derived from the master key: access and refresh tokens issued before a
    rotation stop working after it (users log in again)."""
    new_key = secrets.token_hex(32)

    async def scenario() -> None:
        old = await build(settings(db_url))
        try:
            await old.auth.create_user("ann", "password-of-ann", Role.VIEWER)
            pair = await old.auth.login("ann", "password-of-ann")
        finally:
            await old.close()
        new = await build(settings(db_url, secret_key=new_key))
        try:
            with pytest.raises(AuthError):
                await new.auth.authenticate(pair.access_token)
            with pytest.raises(AuthError):
                await new.auth.refresh(pair.refresh_token)
        finally:
            await new.close()

    asyncio.run(scenario())


def test_crud_commands(db_url: str, runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"username": "robot", "password": SECRET}))
    made = runner.invoke(
        app,
        ["credentials", "create", "erp", "--type", "basic", "--data-file", str(data),
         "--description", "ERP", "--allowed-origin", "https://erp.example.com", "--db", db_url],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "created credential erp (basic) cred_" in made.stdout
    from_stdin = runner.invoke(
        app,
        ["credentials", "create", "tok", "--type", "bearer", "--data-file", "-",
         "--allowed-origin", "https://a.example", "--db", db_url],
        input=json.dumps({"token": SECRET}),
    )  # fmt: skip
    assert from_stdin.exit_code == 0, from_stdin.output

    listed = runner.invoke(app, ["credentials", "list", "--db", db_url])
    assert listed.exit_code == 0 and "erp" in listed.stdout and "tok" in listed.stdout
    only = runner.invoke(app, ["credentials", "list", "--type", "bearer", "--db", db_url])
    assert "tok" in only.stdout and "erp" not in only.stdout
    shown = runner.invoke(app, ["credentials", "show", "erp", "--db", db_url])
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["data"] == {"username": "robot", "password": "********"}
    for result in (made, from_stdin, listed, only, shown):
        assert SECRET not in result.output

    duplicate = runner.invoke(
        app,
        [
            "credentials",
            "create",
            "erp",
            "--type",
            "basic",
            "--data-file",
            str(data),
            "--allowed-origin",
            "https://erp.example.com",
            "--db",
            db_url,
        ],
    )
    assert duplicate.exit_code == 1 and "already exists" in duplicate.stderr
    data.write_text(json.dumps({"token": SECRET, "oops": SECRET}))
    invalid = runner.invoke(
        app,
        [
            "credentials",
            "create",
            "x",
            "--type",
            "bearer",
            "--data-file",
            str(data),
            "--db",
            db_url,
        ],
    )
    assert invalid.exit_code == 2 and "/data/oops" in invalid.stderr
    assert SECRET not in invalid.output
    bad_type = runner.invoke(
        app,
        ["credentials", "create", "x", "--type", "nope", "--data-file", str(data), "--db", db_url],
    )
    assert bad_type.exit_code == 2
    bad_name = runner.invoke(
        app,
        [
            "credentials",
            "create",
            "X Y",
            "--type",
            "bearer",
            "--data-file",
            str(data),
            "--db",
            db_url,
        ],
    )
    assert bad_name.exit_code == 2

    deleted = runner.invoke(app, ["credentials", "delete", "erp", "--db", db_url])
    assert deleted.exit_code == 0 and "deleted credential erp" in deleted.stdout
    missing = runner.invoke(app, ["credentials", "delete", "erp", "--db", db_url])
    assert missing.exit_code == 1 and "not found" in missing.stderr

    async def audit_actions() -> list[str]:
        container = await build(settings(db_url))
        try:
            return [e.action for e in await container.store.list_audit()]
        finally:
            await container.close()

    actions = asyncio.run(audit_actions())
    assert actions.count("credential.create") >= 2 and "credential.delete" in actions
