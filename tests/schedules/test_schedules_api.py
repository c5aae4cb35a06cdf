"""/schedules over HTTP (SQLite and PostgreSQL): create, list with the next 5 fire times,
read, change, pause, resume, trigger, delete; runs filtered by schedule; roles, problems
with pointers, audit entries."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import httpx

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.auth import auth_headers

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
DEFINITION = {
    "name": "report",
    "input_schema": {"type": "object", "required": ["region"]},
    "start": "a",
    "nodes": [{"id": "a", "type": "set", "config": {"values": {"done": True}}}],
}
NIGHTLY = {
    "name": "nightly",
    "workflow": "report",
    "cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "input": {"region": "EU"},
    "catch_up": "one",
    "overlap": "skip",
}


async def _workflow(anon: httpx.AsyncClient, headers: dict[str, str]) -> None:
    made = await anon.post(f"{API}/workflows", json=DEFINITION, headers=headers)
    assert made.status_code == 201, made.text


async def test_create_read_change_pause_trigger_delete(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    await _workflow(anon, admin)
    made = await anon.post(f"{API}/schedules", json=NIGHTLY, headers=admin)
    assert made.status_code == 201, made.text
    body = made.json()
    sid = body["id"]
    assert made.headers["location"] == f"/api/v1/schedules/{sid}"
    assert (body["name"], body["workflow"], body["cron"], body["every"]) == (
        "nightly",
        "report",
        "30 2 * * *",
        None,
    )
    assert (body["catch_up"], body["overlap"], body["enabled"]) == ("one", "skip", True)
    times = [datetime.fromisoformat(t) for t in body["next_fire_times"]]
    assert len(times) == 5 and times == sorted(times)
    assert {t.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") for t in times} == {"02:30"}

    every = await anon.post(
        f"{API}/schedules",
        json={"name": "pulse", "workflow": "report", "every": "5m", "input": {"region": "US"}},
        headers=admin,
    )
    assert every.status_code == 201, every.text
    assert every.json()["every"] == "5m" and every.json()["catch_up"] == "skip"

    listed = await anon.get(f"{API}/schedules", headers=admin)
    assert [s["name"] for s in listed.json()["items"]] == ["nightly", "pulse"]
    assert all(len(s["next_fire_times"]) == 5 for s in listed.json()["items"])
    first = await anon.get(f"{API}/schedules", params={"limit": 1}, headers=admin)
    assert [s["name"] for s in first.json()["items"]] == ["nightly"]
    rest = await anon.get(
        f"{API}/schedules", params={"cursor": first.json()["next_cursor"]}, headers=admin
    )
    assert [s["name"] for s in rest.json()["items"]] == ["pulse"]

    by_name = await anon.get(f"{API}/schedules/nightly", headers=admin)
    assert by_name.status_code == 200 and by_name.json()["id"] == sid

    changed = await anon.patch(
        f"{API}/schedules/{sid}", json={"jitter_s": 30, "enabled": None}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["jitter_s"] == 30.0 and changed.json()["enabled"] is True

    paused = await anon.post(f"{API}/schedules/{sid}/pause", headers=admin)
    assert paused.json()["enabled"] is False and paused.json()["next_fire_times"] == []
    fired = await anon.post(f"{API}/schedules/{sid}/trigger", headers=admin)
    assert fired.status_code == 202, fired.text
    assert fired.json()["outcome"] == "fired" and fired.json()["manual"] is True
    run_id = fired.json()["run_id"]
    runs = await anon.get(f"{API}/runs", params={"schedule": "nightly"}, headers=admin)
    assert [r["id"] for r in runs.json()["items"]] == [run_id]
    assert runs.json()["items"][0]["schedule_id"] == sid
    run = await anon.get(f"{API}/runs/{run_id}", headers=admin)
    assert run.json()["schedule_id"] == sid
    # overlap: skip, and the triggered run has not finished (no worker runs here)
    again = await anon.post(f"{API}/schedules/{sid}/trigger", headers=admin)
    assert again.json()["outcome"] == "skipped" and run_id in again.json()["reason"]
    fires = await anon.get(f"{API}/schedules/{sid}/fires", headers=admin)
    assert [f["outcome"] for f in fires.json()["items"]] == ["skipped", "fired"]

    resumed = await anon.post(f"{API}/schedules/{sid}/resume", headers=admin)
    assert resumed.json()["enabled"] is True and len(resumed.json()["next_fire_times"]) == 5

    gone = await anon.delete(f"{API}/schedules/{sid}", headers=admin)
    assert gone.status_code == 204
    assert (await anon.get(f"{API}/schedules/{sid}", headers=admin)).status_code == 404
    assert (await anon.get(f"{API}/runs/{run_id}", headers=admin)).status_code == 200

    entries = await container.admin.list_audit(target=f"schedule:{sid}")
    assert [e.action for e in entries if e.outcome == "success"] == [
        "schedule.delete",
        "schedule.resume",
        "schedule.trigger",
        "schedule.trigger",
        "schedule.pause",
        "schedule.update",
        "schedule.create",
    ]


async def test_bad_schedules_are_problems_with_pointers(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    await _workflow(anon, admin)
    cases = [
        ({**NIGHTLY, "cron": "* * *"}, "/cron"),
        ({**NIGHTLY, "timezone": "Moon/Base"}, "/timezone"),
        ({**NIGHTLY, "cron": None, "every": "0s"}, "/every"),
        ({**NIGHTLY, "every": "5m"}, "/every"),
        ({**NIGHTLY, "name": "no spaces"}, "/name"),
        ({**NIGHTLY, "input": {"country": "FR"}}, "/input"),
        ({**NIGHTLY, "catch_up": "sometimes"}, "/catch_up"),
        ({**NIGHTLY, "max_catch_up": 5000}, "/max_catch_up"),
        ({**NIGHTLY, "jitter_s": -1}, "/jitter_s"),
        ({**NIGHTLY, "start_at": "2026-12-01T09:00:00"}, "/start_at"),
        ({**NIGHTLY, "surprise": 1}, "/surprise"),
    ]
    for body, pointer in cases:
        response = await anon.post(f"{API}/schedules", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert pointer in [e["pointer"] for e in response.json()["errors"]], response.text
    missing = await anon.post(
        f"{API}/schedules", json={**NIGHTLY, "workflow": "nope"}, headers=admin
    )
    assert missing.status_code == 404
    await anon.post(f"{API}/schedules", json=NIGHTLY, headers=admin)
    taken = await anon.post(f"{API}/schedules", json=NIGHTLY, headers=admin)
    assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
    assert (await anon.post(f"{API}/schedules/nope/trigger", headers=admin)).status_code == 404


async def test_roles(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)
    await _workflow(anon, admin)
    editor = await auth_headers(container, "ed", Role.EDITOR)
    operator = await auth_headers(container, "op", Role.OPERATOR)
    viewer = await auth_headers(container, "vi", Role.VIEWER)
    assert (await anon.get(f"{API}/schedules")).status_code == 401
    refused = await anon.post(f"{API}/schedules", json=NIGHTLY, headers=operator)
    assert refused.status_code == 403
    made = await anon.post(f"{API}/schedules", json=NIGHTLY, headers=editor)
    assert made.status_code == 201
    assert (await anon.get(f"{API}/schedules/nightly", headers=viewer)).status_code == 200
    assert (await anon.post(f"{API}/schedules/nightly/pause", headers=viewer)).status_code == 403
    assert (await anon.post(f"{API}/schedules/nightly/pause", headers=operator)).status_code == 200
    patched = await anon.patch(f"{API}/schedules/nightly", json={"jitter_s": 1}, headers=operator)
    assert patched.status_code == 403
    assert (await anon.delete(f"{API}/schedules/nightly", headers=operator)).status_code == 403
    assert (await anon.delete(f"{API}/schedules/nightly", headers=editor)).status_code == 204
