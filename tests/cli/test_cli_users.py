"""``flowyard users ...`` and ``flowyard api-keys ...`` (in process, :func:`support.cli.cli`):
success paths, the key shown once, and clear messages with a non-zero exit for bad roles,
unknown users or keys, and the last admin."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowyard.bootstrap import build
from flowyard.domain.auth import Role
from flowyard.domain.errors import InvalidInput
from flowyard.security import AuthError, Principal
from flowyard.settings import Settings
from support.auth import PASSWORD
from support.cli import cli, messages

KEY = re.compile(r"^fy_([0-9a-f]+)_(\S+)$")


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Rich tables as wide as needed: ids are never elided in the output checked here."""
    monkeypatch.setenv("COLUMNS", "300")
    yield


def ok(workdir: Path, db: str, *args: str) -> str:
    result = cli(workdir, *args, "--db", db)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def authenticate(db: str, key: str) -> Principal:
    async def main() -> Principal:
        container = await build(Settings(db_url=db, workers=0, load_plugins=False))
        try:
            return await container.auth.authenticate(key)
        finally:
            await container.close()

    return asyncio.run(main())


def test_users_create_list_set_role_delete(workdir: Path, db: str) -> None:
    created = ok(
        workdir, db, "users", "create", "alice", "--role", "editor", "--password", PASSWORD
    )
    assert re.search(r"created user alice \(editor\) usr_\w+", created)
    ok(workdir, db, "users", "create", "bob", "--password", PASSWORD)  # default role: viewer

    listed = ok(workdir, db, "users", "list")
    assert re.search(r"alice\s*│\s*editor\s*│\s*False", listed), listed
    assert re.search(r"bob\s*│\s*viewer", listed), listed
    assert PASSWORD not in listed and "argon2" not in listed

    assert "alice is now operator" in ok(workdir, db, "users", "set-role", "alice", "operator")
    assert re.search(r"alice\s*│\s*operator", ok(workdir, db, "users", "list"))

    assert "deleted user bob" in ok(workdir, db, "users", "delete", "bob")
    assert "bob" not in ok(workdir, db, "users", "list")


def test_password_from_the_prompt(workdir: Path, db: str) -> None:
    result = cli(workdir, "users", "create", "carol", "--db", db, stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.returncode == 0, result.stderr
    assert "created user carol (viewer)" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("users", "create", "dave", "--role", "superuser", "--password", PASSWORD),
        ("users", "set-role", "dave", "root"),
        ("api-keys", "create", "ci", "--role", "owner"),
    ],
)
def test_a_bad_role_is_refused_with_the_choices(workdir: Path, db: str, args: tuple[str]) -> None:
    ok(workdir, db, "users", "create", "dave", "--password", PASSWORD)
    result = cli(workdir, *args, "--db", db)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())  # rich boxes and wraps it
    assert "Invalid value" in message
    for role in Role:
        assert role.value in message
    assert re.search(r"dave\s*│\s*viewer", ok(workdir, db, "users", "list"))  # unchanged


@pytest.mark.parametrize(
    "args", [("users", "set-role", "ghost", "viewer"), ("users", "delete", "ghost")]
)
def test_an_unknown_user_exits_1(workdir: Path, db: str, args: tuple[str]) -> None:
    result = cli(workdir, *args, "--db", db)
    assert result.returncode == 1
    assert "error: user 'ghost' not found" in result.stderr


def test_invalid_users_are_refused(workdir: Path, db: str) -> None:
    short = cli(workdir, "users", "create", "erin", "--password", "short", "--db", db)
    assert short.returncode == 2
    assert "password too short" in short.stderr and "/password" in short.stderr
    ok(workdir, db, "users", "create", "erin", "--password", PASSWORD)
    again = cli(workdir, "users", "create", "erin", "--password", PASSWORD, "--db", db)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_weak_passwords_are_refused_with_the_reason(workdir: Path, db: str) -> None:
    weak = cli(workdir, "users", "create", "gail", "--password", "password", "--db", db)
    assert weak.returncode == 2
    message = " ".join(weak.stderr.split())
    assert "password too weak" in message and "common password" in message, message
    assert "gail" not in ok(workdir, db, "users", "list")


def test_set_password_by_name(workdir: Path, db: str) -> None:
    ok(workdir, db, "users", "create", "hugo", "--password", PASSWORD)
    weak = cli(workdir, "users", "set-password", "hugo", "--password", "hugo1234", "--db", db)
    assert weak.returncode == 2 and "password too weak" in weak.stderr
    new = "a quiet lighthouse keeps nine ledgers"
    changed = cli(workdir, "users", "set-password", "hugo", "--db", db, stdin=f"{new}\n{new}\n")
    assert changed.returncode == 0, changed.stderr
    assert "password of hugo changed" in changed.stdout

    async def login(password: str) -> None:
        container = await build(Settings(db_url=db, workers=0, load_plugins=False))
        try:
            await container.auth.login("hugo", password)
        finally:
            await container.close()

    asyncio.run(login(new))
    with pytest.raises(AuthError):
        asyncio.run(login(PASSWORD))


def test_users_are_named_by_name_and_audited_by_id(workdir: Path, db: str) -> None:
    made = ok(workdir, db, "users", "create", "ivy", "--password", PASSWORD)
    ivy_id = re.search(r"(usr_\w+)", made)
    assert ivy_id
    # Another user named like ivy's id is a different user to the CLI.
    ok(workdir, db, "users", "create", ivy_id.group(1), "--password", PASSWORD)
    assert "is now editor" in ok(workdir, db, "users", "set-role", ivy_id.group(1), "editor")
    listed = ok(workdir, db, "users", "list")
    assert re.search(r"ivy\s*│\s*viewer", listed), listed

    async def audit() -> list[tuple[str, str | None]]:
        container = await build(Settings(db_url=db, workers=0, load_plugins=False))
        try:
            entries = await container.store.list_audit(action="user.update")
            return [(e.outcome, e.target_id) for e in entries]
        finally:
            await container.close()

    other = ok(workdir, db, "users", "list")
    other_id = re.search(rf"(usr_\w+)\s*│\s*{ivy_id.group(1)}", other)
    assert other_id, other
    assert asyncio.run(audit()) == [("success", other_id.group(1))]


def test_the_last_admin_cannot_be_demoted_or_deleted(workdir: Path, db: str) -> None:
    ok(workdir, db, "users", "create", "root", "--role", "admin", "--password", PASSWORD)
    for args in (("set-role", "root", "editor"), ("delete", "root")):
        result = cli(workdir, "users", *args, "--db", db)
        assert result.returncode == 1, args
        message = " ".join(result.stderr.split())
        assert "'root'" in message and "last enabled admin" in message, message
    ok(workdir, db, "users", "create", "spare", "--role", "admin", "--password", PASSWORD)
    assert "root is now editor" in ok(workdir, db, "users", "set-role", "root", "editor")
    refused = cli(workdir, "users", "delete", "spare", "--db", db)
    assert refused.returncode == 1 and "last enabled admin" in refused.stderr


def test_api_keys_create_list_revoke(workdir: Path, db: str) -> None:
    result = cli(workdir, "api-keys", "create", "ci-deploy", "--role", "operator", "--db", db)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    match = KEY.match(key)
    assert match, result.stdout  # stdout is the key alone (scriptable)
    prefix, secret = match.groups()
    assert "shown once" in result.stderr and key not in result.stderr
    key_id = re.search(r"API key (key_\w+) \(operator\)", result.stderr)
    assert key_id, result.stderr

    principal = authenticate(db, key)
    assert (principal.kind, principal.name, principal.role) == ("key", prefix, Role.OPERATOR)

    listed = ok(workdir, db, "api-keys", "list")
    assert key_id.group(1) in listed and prefix in listed and "ci-deploy" in listed
    assert secret not in listed  # never shown again
    assert re.search(r"operator\s*│\s*-\s*│", listed), listed  # no expiry

    expiring = ok(workdir, db, "api-keys", "create", "temp", "--expires-days", "3")
    assert KEY.match(expiring.strip())

    assert f"revoked {key_id.group(1)}" in ok(workdir, db, "api-keys", "revoke", key_id.group(1))
    with pytest.raises(AuthError, match="revoked"):
        authenticate(db, key)
    row = next(line for line in ok(workdir, db, "api-keys", "list").splitlines() if prefix in line)
    assert re.search(r"\d{4}-\d\d-\d\dT", row.rsplit("│", 2)[-2]), row  # revoked at


def test_revoking_an_unknown_key_exits_1(workdir: Path, db: str) -> None:
    result = cli(workdir, "api-keys", "revoke", "key_nosuch", "--db", db)
    assert result.returncode == 1
    assert "error: API key 'key_nosuch' not found" in result.stderr


@pytest.mark.parametrize(
    ("username", "why"),
    [
        ("ada lovelace", "letters, digits"),
        ("ada/lovelace", "letters, digits"),
        ("ada\n", "letters, digits"),
        ("", "empty"),
        ("a" * 129, "at most 128"),
    ],
    ids=["space", "slash", "newline", "empty", "too-long"],
)
def test_a_bad_username_is_refused_like_the_api_does(
    workdir: Path, db: str, username: str, why: str
) -> None:
    """The API's rule, refused with one line before the password is asked for."""
    result = cli(workdir, "users", "create", username, "--db", db, stdin="")
    assert result.returncode == 2, result.stderr
    [line] = messages(result).strip().splitlines()
    assert line.startswith("error: invalid username") and why in line, line
    assert "Password" not in result.stdout + result.stderr  # never prompted
    assert "usr_" not in ok(workdir, db, "users", "list")


def test_the_service_applies_the_username_rule(db: str) -> None:
    async def main() -> None:
        container = await build(Settings(db_url=db, workers=0, load_plugins=False))
        try:
            with pytest.raises(InvalidInput) as refused:
                await container.auth.create_user("ada lovelace", PASSWORD, Role.VIEWER)
            assert refused.value.problems[0].pointer == "/username"
        finally:
            await container.close()

    asyncio.run(main())
