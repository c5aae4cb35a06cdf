"""``flowyard campaigns start|status|list|runs|pause|resume|cancel|retry-failed`` through the
in-process CLI on a SQLite file: every format, idempotent re-starts, progress read back after
a worker drained the campaign, whole-campaign actions, and one-line errors with exit codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowyard.bootstrap import Container, build
from flowyard.settings import Settings
from support.campaigns import MAILER, WAITER
from support.cli import cli, messages
from support.runs import wait_for_runs

KEY = "{{ item.email }}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[str, Container]]:
    """A SQLite file holding ``mailer`` and ``waiter``, and a container on it (the test's
    worker)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    container = await build(Settings(db_url=url, workers=0, load_plugins=False))
    for definition in (MAILER, WAITER):
        await container.service.create_workflow(definition, "tester")
    try:
        yield url, container
    finally:
        await container.close()


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {status: n for status, n in counts.items() if n}


def ndjson(n: int) -> str:
    return "".join(json.dumps({"email": f"u{i}@example.com", "i": i}) + "\n" for i in range(n))


def start(workdir: Path, url: str, file: Path, *extra: str, workflow: str = "mailer") -> Any:
    done = cli(
        workdir, "campaigns", "start", str(file), "--workflow", workflow, *extra, "--db", url
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_start_follow_and_drain_a_campaign(workdir: Path, db: tuple[str, Container]) -> None:
    url, container = db
    items = workdir / "people.ndjson"
    items.write_text(ndjson(6))
    shown = start(workdir, url, items, "--name", "spring", "--item-key", KEY)
    assert (shown["total"], shown["status"]) == (6, "running")
    assert nonzero(shown["counts"]) == {"pending": 6}

    status = cli(workdir, "campaigns", "status", shown["id"], "--db", url)
    assert status.returncode == 0, status.stderr
    assert "0/6" in status.stdout and "pending 6" in status.stdout and "ETA" in status.stdout

    listed = cli(workdir, "campaigns", "list", "--db", url)
    assert shown["id"] in listed.stdout and "spring" in listed.stdout

    page = cli(workdir, "campaigns", "runs", shown["id"], "--limit", "4", "--json", "--db", url)
    body = json.loads(page.stdout)
    assert [r["input"]["i"] for r in body["items"]] == [0, 1, 2, 3]
    assert body["next_cursor"] == body["items"][-1]["id"]
    rest = cli(workdir, "campaigns", "runs", shown["id"], "--after", body["next_cursor"],
               "--json", "--db", url)  # fmt: skip
    assert [r["input"]["i"] for r in json.loads(rest.stdout)["items"]] == [4, 5]
    one = cli(workdir, "campaigns", "runs", shown["id"], "--key", "u3@example.com", "--db", url)
    assert "u3@example.com" in one.stdout and "u2@example.com" not in one.stdout

    again = cli(workdir, "campaigns", "start", str(items), "--workflow", "mailer", "--name",
                "spring", "--item-key", KEY, "--db", url)  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout)["id"] == shown["id"]
    assert "started before" in again.stderr

    ids = [r["id"] for r in body["items"]] + [r["id"] for r in json.loads(rest.stdout)["items"]]
    await wait_for_runs(container, ids)
    watched = cli(workdir, "campaigns", "status", shown["id"], "--watch", "--interval", "0.1",
                  "--json", "--db", url)  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    final = json.loads(watched.stdout)
    assert final["status"] == "completed" and nonzero(final["counts"]) == {"succeeded": 6}
    real = await container.store.count_campaign_runs(shown["id"])
    assert {s.value: n for s, n in real.items()} == final["counts"]
    drawn = cli(workdir, "campaigns", "status", shown["id"], "--watch", "--db", url)
    assert "6/6" in drawn.stdout and "100.0 %" in drawn.stdout and "succeeded 6" in drawn.stdout


async def test_csv_json_and_stdin_items(workdir: Path, db: tuple[str, Container]) -> None:
    url, _ = db
    table = workdir / "people.csv"
    table.write_text("email,first\r\nada@example.com,Ada\r\nbob@example.com,Bob\r\n")
    by_csv = start(workdir, url, table, "--name", "csv", "--item-key", KEY)
    assert by_csv["total"] == 2
    array = workdir / "people.json"
    array.write_text(json.dumps([{"email": "ada@example.com"}]))
    by_json = start(workdir, url, array, "--name", "json", "--vars", '{"tier": "gold"}')
    runs = cli(workdir, "campaigns", "runs", by_json["id"], "--json", "--db", url)
    assert json.loads(runs.stdout)["items"][0]["vars"] == {"tier": "gold"}
    piped = cli(workdir, "campaigns", "start", "-", "--format", "ndjson", "--workflow", "mailer",
                "--name", "piped", "--db", url, stdin=ndjson(3))  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["total"] == 3


async def test_whole_campaign_actions(workdir: Path, db: tuple[str, Container]) -> None:
    url, container = db
    items = workdir / "w.ndjson"
    items.write_text(ndjson(5))
    shown = start(workdir, url, items, "--name", "waits", "--workflow", "waiter")
    cid = shown["id"]

    paused = cli(workdir, "campaigns", "pause", cid, "--db", url)
    assert paused.returncode == 0, paused.stderr
    result = json.loads(paused.stdout)
    assert (result["moved"], result["campaign"]["status"]) == (5, "paused")
    assert nonzero(result["campaign"]["counts"]) == {"paused": 5}
    listed = cli(workdir, "campaigns", "runs", cid, "--status", "paused", "--json", "--db", url)
    assert len(json.loads(listed.stdout)["items"]) == 5

    resumed = json.loads(cli(workdir, "campaigns", "resume", cid, "--db", url).stdout)
    assert resumed["moved"] == 5 and resumed["campaign"]["status"] == "running"

    timed_out = cli(workdir, "campaigns", "status", cid, "--watch", "--interval", "0.1",
                    "--timeout", "0.3", "--db", url)  # fmt: skip
    assert timed_out.returncode == 1
    assert messages(timed_out).startswith("error: campaign") and "unfinished" in timed_out.stderr

    cancelled = json.loads(cli(workdir, "campaigns", "cancel", cid, "--db", url).stdout)
    assert cancelled["moved"] == 5 and nonzero(cancelled["campaign"]["counts"]) == {"cancelled": 5}
    real = await container.store.count_campaign_runs(cid)
    assert nonzero({s.value: n for s, n in real.items()}) == {"cancelled": 5}
    again = cli(workdir, "campaigns", "pause", cid, "--db", url)
    assert again.returncode == 1 and "is cancelled" in messages(again)
    watched = cli(workdir, "campaigns", "status", cid, "--watch", "--json", "--db", url)
    assert watched.returncode == 0 and json.loads(watched.stdout)["status"] == "cancelled"

    retried = cli(workdir, "campaigns", "retry-failed", cid, "--db", url)
    assert retried.returncode == 0 and json.loads(retried.stdout)["moved"] == 0


@pytest.mark.parametrize(
    ("args", "stdin", "code", "says"),
    [
        (["people.txt", "--name", "x"], None, 2, "cannot tell the format"),
        (["missing.ndjson", "--name", "x"], None, 2, "cannot read"),
        (["-", "--name", "x"], "", 2, "needs --format"),
        (["bad.ndjson", "--name", "x"], None, 2, "line 2"),
        (["dup.ndjson", "--name", "x", "--item-key", KEY], None, 2, "1 item(s) refused"),
        (["obj.json", "--name", "x"], None, 2, "not a JSON array"),
        (["people.ndjson", "--name", "x", "--item-key", "{{ 1 }}"], None, 2, "not a path"),
        (["people.ndjson", "--name", "x", "--vars", "[1]"], None, 2, "--vars is not"),
        (["people.ndjson", "--name", "x", "--workflow", "nope"], None, 1, "nope"),
        (["people.ndjson", "--name", "x", "--priority", "12"], None, 2, "priority must be"),
        (["people.ndjson", "--name", "x", "--key-concurrency", "2"], None, 2, "limits"),
        (["people.ndjson", "--name", "x", "--rate", "fast"], None, 2, "limits"),
    ],
)
async def test_bad_starts_are_one_line_and_start_nothing(
    workdir: Path,
    db: tuple[str, Container],
    args: list[str],
    stdin: str | None,
    code: int,
    says: str,
) -> None:
    url, container = db
    (workdir / "people.txt").write_text(ndjson(1))
    (workdir / "people.ndjson").write_text(ndjson(2))
    (workdir / "bad.ndjson").write_text(ndjson(1) + "{nope\n")
    (workdir / "dup.ndjson").write_text(ndjson(1) * 2)
    (workdir / "obj.json").write_text('{"email": "a@b.c"}')
    if "--workflow" not in args:
        args = [*args, "--workflow", "mailer"]
    done = cli(workdir, "campaigns", "start", *args, "--db", url, stdin=stdin)
    assert done.returncode == code, done.stderr
    first = messages(done).splitlines()[0]
    assert first.startswith("error: ") and "Traceback" not in done.stderr
    assert says in messages(done)
    assert await container.service.list_campaigns() == []


async def test_unknown_campaign(workdir: Path, db: tuple[str, Container]) -> None:
    url, _ = db
    for command in ("status", "runs", "pause", "cancel"):
        done = cli(workdir, "campaigns", command, "cmp_nope", "--db", url)
        assert done.returncode == 1, (command, done.stderr)
        assert messages(done).startswith("error: ") and "cmp_nope" in messages(done)


async def test_set_a_running_campaigns_priority_weight_and_limits(
    workdir: Path, db: tuple[str, Container]
) -> None:
    url, container = db
    items = workdir / "people.ndjson"
    items.write_text(ndjson(3))
    shown = start(workdir, url, items, "--name", "steered", "--workflow", "waiter")
    cid = shown["id"]
    done = cli(
        workdir, "campaigns", "set", cid, "--priority", "7", "--weight", "4",
        "--concurrency", "2", "--rate", "5/s", "--db", url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    changed = json.loads(done.stdout)
    assert (changed["priority"], changed["weight"]) == (7, 4)
    assert changed["limits"]["concurrency"] == 2 and changed["limits"]["rate"] == "5 per 1s"
    assert "3 unfinished step(s) took priority 7" in done.stderr
    steps = await container.store.list_steps((await container.store.list_campaign_runs(cid))[0].id)
    assert {s.priority for s in steps} == {7}
    status = cli(workdir, "campaigns", "status", cid, "--db", url)
    assert "priority 7 · weight 4 · limits concurrency 2, rate 5 per 1s" in status.stdout
    removed = cli(workdir, "campaigns", "set", cid, "--rate", "none", "--db", url)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["limits"]["rate"] is None
    for args, says in (
        ([], "nothing to change"),
        (["--priority", "12"], "priority must be from 0 to 9"),
        (["--concurrency", "many"], "--concurrency must be an integer or none"),
        (["--key-rate", "1/s"], "no concurrency_key"),
    ):
        bad = cli(workdir, "campaigns", "set", cid, *args, "--db", url)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr
        assert says in messages(bad), messages(bad)
    audit = await container.store.list_audit(action="campaign.update")
    assert len(audit) == 2 and audit[0].target_id == cid
