"""Campaigns over the API on SQLite and PostgreSQL: JSON, NDJSON and CSV bodies, every
refusal (problem+json, nothing started), idempotent re-posts, progress counters equal to a
real count after a worker drains the campaign and after a cancel, pause and resume as a
whole."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from flowyard.bootstrap import Container
from support.campaigns import MAILER, WAITER
from support.runs import wait_for_runs

API = "/api/v1"
PROBLEM = "application/problem+json"


@pytest.fixture
async def client(api_client: httpx.AsyncClient) -> httpx.AsyncClient:
    for definition in (MAILER, WAITER):
        answer = await api_client.post(f"{API}/workflows", json=definition)
        assert answer.status_code == 201, answer.text
    return api_client


def people(n: int) -> list[dict[str, Any]]:
    return [{"email": f"u{i}@example.com", "i": i} for i in range(n)]


async def post_json(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return await client.post(f"{API}/campaigns", json=body, **kw)


async def post_lines(
    client: httpx.AsyncClient, content: bytes | str, media: str, **params: str
) -> httpx.Response:
    return await client.post(
        f"{API}/campaigns",
        content=content,
        params={"workflow": "mailer", "name": "lines", "item_key": "{{ item.email }}", **params},
        headers={"Content-Type": media},
    )


def refused(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    return body


async def nothing_started(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{API}/campaigns")).json()["items"] == []
    assert (await client.get(f"{API}/runs")).json()["items"] == []


async def test_a_json_campaign_runs_to_the_end_and_counts_stay_true(
    client: httpx.AsyncClient, container: Container
) -> None:
    body = {
        "workflow": "mailer",
        "name": "spring",
        "items": people(12),
        "item_key": "{{ item.email }}",
    }
    answer = await post_json(client, body)
    assert answer.status_code == 201, answer.text
    campaign = answer.json()
    assert campaign["total"] == 12 and campaign["counts"]["pending"] == 12
    assert campaign["status"] == "running" and answer.headers["Location"].endswith(campaign["id"])

    runs = (await client.get(f"{API}/campaigns/{campaign['id']}/runs?limit=5")).json()
    assert len(runs["items"]) == 5 and runs["next_cursor"]
    ids = [r["id"] for r in runs["items"]]
    while runs["next_cursor"]:
        runs = (
            await client.get(
                f"{API}/campaigns/{campaign['id']}/runs",
                params={"limit": 5, "cursor": runs["next_cursor"]},
            )
        ).json()
        ids += [r["id"] for r in runs["items"]]
    assert len(set(ids)) == 12
    one = await client.get(
        f"{API}/campaigns/{campaign['id']}/runs", params={"correlation_key": "u3@example.com"}
    )
    assert [r["input"]["i"] for r in one.json()["items"]] == [3]

    await wait_for_runs(container, ids)
    done = (await client.get(f"{API}/campaigns/{campaign['id']}")).json()
    assert done["counts"]["succeeded"] == 12 and done["finished"] == 12
    assert done["status"] == "completed" and done["eta_s"] == 0.0 and done["rate_per_s"] > 0
    real = await container.store.count_campaign_runs(campaign["id"])
    assert {s.value: n for s, n in real.items()} == done["counts"]

    again = await post_json(client, body)  # the same campaign and items: answered, no runs
    assert again.status_code == 200 and again.json()["id"] == campaign["id"]
    assert len((await client.get(f"{API}/runs?limit=100")).json()["items"]) == 12
    other = await post_json(client, {**body, "items": people(13)})
    assert refused(other, 409)["campaign_id"] == campaign["id"]


async def test_the_runs_list_filters_by_campaign_with_its_other_filters(
    client: httpx.AsyncClient,
) -> None:
    """``GET /runs?campaign=`` combines with every other filter of the runs list (the
    console's runs page); an unknown campaign is a 404 like an unknown workflow."""
    first = (
        await post_json(
            client,
            {"workflow": "mailer", "name": "a", "items": people(3), "item_key": "{{ item.email }}"},
        )
    ).json()
    await post_json(
        client,
        {"workflow": "mailer", "name": "b", "items": people(2), "item_key": "{{ item.email }}"},
    )
    listed = (await client.get(f"{API}/runs", params={"campaign": first["id"]})).json()["items"]
    assert sorted(r["input"]["i"] for r in listed) == [0, 1, 2]
    assert all(r["campaign_id"] == first["id"] for r in listed)
    one = await client.get(
        f"{API}/runs",
        params={
            "campaign": first["id"],
            "correlation_key": "u1@example.com",
            "status": "pending",
            "workflow": "mailer",
        },
    )
    assert [r["input"]["i"] for r in one.json()["items"]] == [1]
    none = await client.get(f"{API}/runs", params={"campaign": first["id"], "error_type": "http.*"})
    assert none.json()["items"] == []
    refused(await client.get(f"{API}/runs", params={"campaign": "cmp_nothing"}), 404)


async def test_ndjson_and_csv_bodies(client: httpx.AsyncClient) -> None:
    lines = "\n".join(json.dumps(p) for p in people(7)) + "\n\n"
    answer = await post_lines(client, lines, "application/x-ndjson")
    assert answer.status_code == 201, answer.text
    assert answer.json()["total"] == 7
    csv_body = 'email,i\r\nu1@example.com,1\r\n"u2@example.com","2, with a comma"\r\n'
    answer = await post_lines(client, csv_body, "text/csv; charset=utf-8", name="csv")
    assert answer.status_code == 201, answer.text
    runs = (await client.get(f"{API}/campaigns/{answer.json()['id']}/runs")).json()["items"]
    assert [r["input"] for r in runs] == [
        {"email": "u1@example.com", "i": "1"},
        {"email": "u2@example.com", "i": "2, with a comma"},
    ]
    keyed = await post_lines(client, lines, "application/x-ndjson", name="other")
    assert keyed.status_code == 201
    by_header = await client.post(
        f"{API}/campaigns",
        content=lines,
        params={"workflow": "mailer", "name": "renamed"},
        headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": "K-1"},
    )
    assert by_header.status_code == 201
    repeat = await client.post(
        f"{API}/campaigns",
        content=lines,
        params={"workflow": "mailer", "name": "renamed-again"},
        headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": "K-1"},
    )
    assert repeat.status_code == 200 and repeat.json()["id"] == by_header.json()["id"]


@pytest.mark.parametrize(
    ("media", "content", "where"),
    [
        ("application/x-ndjson", '{"email": "a@x.io"}\n{"email": "b@x.io"\n', "line 2"),
        ("application/x-ndjson", '{"email": "a@x.io"}\n{"email": NaN}\n', "line 2"),
        ("application/x-ndjson", '{"email": "a@x.io"}\n\n{"email": "a@x.io"}\n', "line 3"),
        ("application/x-ndjson", '{"email": "a@x.io"}\n{"email": 5}\n', "line 2: /email"),
        ("application/x-ndjson", '{"email": "a@x.io"}\n{"mail": "b@x.io"}\n', "line 2"),
        ("text/csv", "email,i\na@x.io,1\nb@x.io\n", "line 3"),
        ("text/csv", "email,email\na@x.io,1\n", "line 1"),
        ("text/csv", "", "line 1"),
    ],
)
async def test_a_bad_line_is_named_and_nothing_starts(
    client: httpx.AsyncClient, media: str, content: str, where: str
) -> None:
    problem = refused(await post_lines(client, content, media), 422)
    assert problem["errors"][0]["pointer"].startswith(where), problem
    await nothing_started(client)


async def test_json_refusals(client: httpx.AsyncClient) -> None:
    base = {"workflow": "mailer", "name": "x", "item_key": "{{ item.email }}"}
    bad = refused(
        await post_json(client, {**base, "items": [{"email": "ok@x.io"}, {"email": 1}]}), 422
    )
    assert bad["errors"][0]["pointer"] == "/items/1/email"
    dup = refused(
        await post_json(client, {**base, "items": [{"email": "a@x.io"}, {"email": "a@x.io"}]}), 422
    )
    assert dup["errors"][0]["pointer"] == "/items/1" and "unique" in dup["errors"][0]["message"]
    template = refused(
        await post_json(client, {**base, "item_key": "{{ item.email | upper }}", "items": [{}]}),
        422,
    )
    assert template["errors"][0]["pointer"] == "/item_key"
    assert refused(await post_json(client, {**base, "items": []}), 422)
    assert refused(await post_json(client, {**base, "workflow": "nope", "items": [{}]}), 404)
    assert refused(await post_json(client, {"workflow": "mailer", "items": []}), 422)
    await nothing_started(client)
    unsupported = await client.post(
        f"{API}/campaigns", content="a", headers={"Content-Type": "text/plain"}
    )
    assert refused(unsupported, 415)
    missing = await client.post(
        f"{API}/campaigns", content="{}", headers={"Content-Type": "application/x-ndjson"}
    )
    assert refused(missing, 422)["errors"][0]["pointer"] == "/query/workflow"
    assert refused(await client.get(f"{API}/campaigns/cmp_nope"), 404)


async def test_the_body_limit_is_the_campaigns_own(
    client: httpx.AsyncClient, container: Container
) -> None:
    limit = container.settings.max_campaign_bytes
    assert limit > container.settings.max_request_bytes
    big = b'{"email": "a@x.io"}\n' * (limit // 20 + 1)
    assert refused(await post_lines(client, big, "application/x-ndjson"), 413)
    await nothing_started(client)


async def test_pause_resume_and_cancel_as_a_whole(
    client: httpx.AsyncClient, container: Container
) -> None:
    body = {
        "workflow": "waiter",
        "name": "w",
        "items": [{"n": i} for i in range(5)],
        "item_key": "n-{{ item.n }}",
    }
    campaign = (await post_json(client, body)).json()
    cid = campaign["id"]
    paused = await client.post(f"{API}/campaigns/{cid}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["moved"] == 5 and paused.json()["campaign"]["status"] == "paused"
    assert paused.json()["campaign"]["counts"]["paused"] == 5
    resumed = (await client.post(f"{API}/campaigns/{cid}/resume")).json()
    assert resumed["moved"] == 5 and resumed["campaign"]["counts"]["paused"] == 0
    cancelled = (await client.post(f"{API}/campaigns/{cid}/cancel")).json()
    assert cancelled["moved"] == 5 and cancelled["campaign"]["status"] == "cancelled"
    assert cancelled["campaign"]["counts"]["cancelled"] == 5
    real = await container.store.count_campaign_runs(cid)
    assert {s.value: n for s, n in real.items()} == cancelled["campaign"]["counts"]
    assert refused(await client.post(f"{API}/campaigns/{cid}/pause"), 409)
    listed = (await client.get(f"{API}/campaigns?workflow=waiter")).json()["items"]
    assert [c["id"] for c in listed] == [cid]
