"""A first hour without traps, in process: the admin-password notice, samples that never
overwrite, PUT accepting what GET answers, the archived-name conflict, and an owner-only
SQLite database (with its -wal and -shm files); on SQLite and PostgreSQL where it applies."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from flowyard.api.app import first_start
from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.store import open_store

EXAMPLES = Path(__file__).parents[2] / "examples"
API = "/api/v1"
GIVEN = "given-admin-password-7"


async def test_an_ignored_admin_password_is_said_at_start(
    container: Container, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    await container.auth.create_user("ops", "an-ops-password-123", Role.ADMIN)
    container.settings = container.settings.model_copy(update={"admin_password": SecretStr(GIVEN)})
    with caplog.at_level(logging.WARNING, logger="flowyard"):
        await first_start(container)
    [record] = [r for r in caplog.records if "FLOWYARD_ADMIN_PASSWORD" in r.getMessage()]
    assert record.levelno == logging.WARNING and "ignored" in record.getMessage()
    assert GIVEN not in caplog.text + capsys.readouterr().err
    assert [u.username for u in await container.store.list_users()] == ["ops"]


async def test_no_notice_when_the_password_seeds_the_admin(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    container.settings = container.settings.model_copy(update={"admin_password": SecretStr(GIVEN)})
    with caplog.at_level(logging.WARNING, logger="flowyard"):
        await first_start(container)
    assert "FLOWYARD_ADMIN_PASSWORD" not in caplog.text
    assert (await container.auth.login("admin", GIVEN)).access_token


async def test_samples_never_overwrite_a_workflow(container: Container, tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    shutil.copytree(EXAMPLES, samples, ignore=shutil.ignore_patterns("*.py"))
    names = sorted(json.loads(p.read_text())["name"] for p in samples.glob("*.json"))
    assert sorted(await container.load_samples(samples)) == names

    edited = json.loads((samples / "lead_routing_http.json").read_text())
    edited["description"] = "edited by a user"
    record, _, created = await container.service.save_workflow(edited, "user:ann")
    assert created and record.latest_version == 2
    archived = await container.store.get_workflow("expense-approval")
    await container.store.archive_workflow(archived.id)

    assert await container.load_samples(samples) == []  # every one exists: none loaded
    kept = await container.store.get_workflow("lead-routing-http")
    assert kept.latest_version == 2
    version = await container.store.get_version(kept.id, 2)
    assert version.definition["description"] == "edited by a user"
    still = await container.store.get_workflow("expense-approval")
    assert still.archived and still.latest_version == 1


async def test_put_accepts_what_get_answers(api_client: httpx.AsyncClient) -> None:
    definition = json.loads((EXAMPLES / "approval.json").read_text())
    assert (await api_client.post(f"{API}/workflows", json=definition)).status_code == 201
    got = (await api_client.get(f"{API}/workflows/expense-approval")).json()
    same = await api_client.put(f"{API}/workflows/expense-approval", json=got)
    assert same.status_code == 200, same.text
    assert same.json()["created"] is False  # unchanged: no new version

    got["version"]["definition"]["description"] = "read, edited, written back"
    edited = await api_client.put(f"{API}/workflows/expense-approval", json=got)
    assert edited.status_code == 200, edited.text
    assert edited.json()["version"]["version"] == 2
    assert edited.json()["version"]["definition"]["description"] == "read, edited, written back"
    bare = dict(got["version"]["definition"], description="bare")
    assert (await api_client.put(f"{API}/workflows/expense-approval", json=bare)).status_code == 200


async def test_creating_an_archived_name_says_it_is_archived(api_client: httpx.AsyncClient) -> None:
    definition = json.loads((EXAMPLES / "approval.json").read_text())
    assert (await api_client.post(f"{API}/workflows", json=definition)).status_code == 201
    assert (await api_client.delete(f"{API}/workflows/expense-approval")).status_code == 200
    again = await api_client.post(f"{API}/workflows", json=definition)
    assert again.status_code == 409
    detail = again.json()["detail"]
    assert "archived" in detail and "PUT /api/v1/workflows/expense-approval" in detail
    restored = await api_client.put(f"{API}/workflows/expense-approval", json=definition)
    assert restored.status_code == 200 and restored.json()["workflow"]["archived"] is False


async def test_a_new_sqlite_database_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files 0644 unless created otherwise
    try:
        path = tmp_path / "new-dir" / "flowyard.db"
        store = open_store(f"sqlite:///{path}")
        try:
            await store.migrate()
            await store.list_users()
            files = [path, path.with_name("flowyard.db-wal"), path.with_name("flowyard.db-shm")]
            for file in files:
                assert file.exists(), file
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        finally:
            await store.close()
    finally:
        os.umask(old)
