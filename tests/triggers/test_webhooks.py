"""Webhook triggers over real HTTP: signed deliveries start runs; everything else is refused
(problem+json, audited) and starts nothing. Signatures are made here as the senders
document them (docs/triggers.md cites the references), not by flowyard's own code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from triggers.conftest import SECRET, TWILIO_TOKEN, VERIFY_TOKEN, Hooked

HMAC_AUTH = {"scheme": "hmac", "credential": "hook-secret"}


def flowyard_signed(body: bytes, *, at: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """Headers of a body signed with the generic scheme (as docs/triggers.md's openssl)."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Flowyard-Signature": f"t={t},v1={mac}"}


def twilio_signed(url: str, form: dict[str, str]) -> str:
    """Twilio's algorithm: the URL, then each POST field name+value sorted by name,
    HMAC-SHA1 with the auth token, base64."""
    data = url + "".join(name + form[name] for name in sorted(form))
    return base64.b64encode(
        hmac.new(TWILIO_TOKEN.encode(), data.encode(), "sha1").digest()
    ).decode()


async def wait_for_runs(hooked: Hooked, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(20):
        while len(runs := await hooked.runs()) < count:
            await asyncio.sleep(0.05)
    return runs


async def wait_until_done(hooked: Hooked, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while (run := (await hooked.http.get(f"/runs/{run_id}")).json())["status"] != "succeeded":
            assert run["status"] in ("pending", "running", "waiting"), run
            await asyncio.sleep(0.05)
    return run


async def test_a_signed_delivery_starts_a_run_that_succeeds(hooked: Hooked) -> None:
    hook = await hooked.hook(auth=HMAC_AUTH)
    assert hook["id"].startswith("hk_") and len(hook["id"]) == 35
    body = json.dumps({"email": "ada@example.com"}).encode()
    async with httpx.AsyncClient() as sender:  # no user token
        answer = await sender.post(
            hooked.base + f"/hooks/{hook['id']}", content=body, headers=flowyard_signed(body)
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["created"] is True
    run = await wait_until_done(hooked, answer.json()["run_id"])
    assert run["input"] == {"email": "ada@example.com"}
    assert run["output"] == {"greeting": "hi ada@example.com"}
    [entry] = await hooked.audit("hook.deliver")
    assert (entry["actor"], entry["outcome"], entry["target_id"]) == (
        "hook:h",
        "success",
        run["id"],
    )


async def test_refusals_start_nothing_and_are_audited(hooked: Hooked) -> None:
    hook = await hooked.hook(auth=HMAC_AUTH, max_body_bytes=2048)
    url = hooked.base + f"/hooks/{hook['id']}"
    body = json.dumps({"email": "ada@example.com"}).encode()
    stale = int(time.time()) - 301
    big = json.dumps({"email": "a@example.com", "pad": "x" * 4096}).encode()
    bad_json = b'{"email": "a@example.com", "n": NaN}'
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        (url, body, {"Content-Type": "application/json"}, 401, "missing_signature"),
        (url, body, flowyard_signed(body, secret="not-the-secret"), 401, "bad_signature"),
        (url, body + b" ", flowyard_signed(body), 401, "bad_signature"),
        (url, body, flowyard_signed(body, at=stale), 401, "stale_timestamp"),
        (url, big, flowyard_signed(big), 413, "too_large"),
        (url, bad_json, flowyard_signed(bad_json), 422, "malformed_body"),
        (hooked.base + "/hooks/hk_" + "A" * 32, body, flowyard_signed(body), 404, "unknown_hook"),
        (hooked.base + "/hooks/h", body, flowyard_signed(body), 404, "unknown_hook"),
    ]
    async with httpx.AsyncClient() as sender:
        for target, content, headers, status, reason in cases:
            answer = await sender.post(target, content=content, headers=headers)
            assert answer.status_code == status, (reason, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["reason"] == reason
            assert SECRET not in answer.text
        assert (await hooked.http.patch(f"/hooks/{hook['id']}", json={"enabled": False})).is_success
        disabled = await sender.post(url, content=body, headers=flowyard_signed(body))
        assert (disabled.status_code, disabled.json()["reason"]) == (404, "disabled")
    assert await hooked.runs() == []
    entries = await hooked.audit("hook.deliver")
    reasons = sorted(e["detail"]["reason"] for e in entries)
    assert reasons == sorted([c[4] for c in cases] + ["disabled"])
    for entry in entries:
        assert entry["source_ip"] == "127.0.0.1"
        assert entry["outcome"] != "success"
        text = json.dumps(entry)
        assert "ada@example.com" not in text and "v1=" not in text


async def test_input_schema_refusal_has_pointers(hooked: Hooked) -> None:
    hook = await hooked.hook(auth=HMAC_AUTH, input={"email": "{{ body.contact.mail }}"})
    body = json.dumps({"contact": {"mail": 42}}).encode()
    async with httpx.AsyncClient() as sender:
        answer = await sender.post(
            hooked.base + f"/hooks/{hook['id']}", content=body, headers=flowyard_signed(body)
        )
    assert answer.status_code == 422, answer.text
    assert [e["pointer"] for e in answer.json()["errors"]] == ["/input/email"]
    assert await hooked.runs() == []


async def test_a_replayed_delivery_answers_the_first_run(hooked: Hooked) -> None:
    hook = await hooked.hook(auth=HMAC_AUTH, dedupe={"header": "X-Delivery-Id", "window_s": 3600})
    url = hooked.base + f"/hooks/{hook['id']}"
    body = json.dumps({"email": "ada@example.com"}).encode()
    async with httpx.AsyncClient() as sender:
        answers = [
            await sender.post(
                url, content=body, headers={**flowyard_signed(body), "X-Delivery-Id": delivery}
            )
            for delivery in ("d-1", "d-1", "d-2")
        ]
        missing = await sender.post(url, content=body, headers=flowyard_signed(body))
    assert [a.status_code for a in answers] == [202, 200, 202]
    assert answers[0].json()["run_id"] == answers[1].json()["run_id"]
    assert answers[1].json()["created"] is False
    assert answers[2].json()["run_id"] != answers[0].json()["run_id"]
    assert (missing.status_code, missing.json()["reason"]) == (422, "missing_delivery_id")
    assert len(await wait_for_runs(hooked, 2)) == 2


async def test_respond_on_finish_answers_with_the_output(hooked: Hooked) -> None:
    hook = await hooked.hook(
        auth={"scheme": "header_token", "credential": "hook-secret", "header": "X-Token"},
        respond={"mode": "on_finish", "timeout_s": 15},
        path="greet",
    )
    body = json.dumps({"email": "bo@example.com"}).encode()
    async with httpx.AsyncClient() as sender:
        answer = await sender.post(
            hooked.base + "/hooks/by-path/greet",
            content=body,
            headers={"Content-Type": "application/json", "X-Token": SECRET},
        )
        wrong = await sender.post(
            hooked.base + f"/hooks/{hook['id']}",
            content=body,
            headers={"Content-Type": "application/json", "X-Token": SECRET[:-1] + "?"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    assert answer.json()["output"] == {"greeting": "hi bo@example.com"}
    assert (wrong.status_code, wrong.json()["reason"]) == (401, "bad_signature")


async def test_a_twilio_signed_form_post_starts_a_run(hooked: Hooked) -> None:
    public = "https://hooks.example.com/sms/inbound"
    hook = await hooked.hook(
        auth={"scheme": "twilio", "credential": "twilio-main", "public_url": public},
        input={"email": "{{ form.Body }}", "from": "{{ form.From }}"},
        respond={"mode": "fixed", "status": 204},
    )
    form = {"From": "+15550001111", "Body": "sms@example.com", "MessageSid": "SM1"}
    async with httpx.AsyncClient() as sender:
        answer = await sender.post(
            hooked.base + f"/hooks/{hook['id']}",
            content=urlencode(form),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio_signed(public, form),
            },
        )
        forged = await sender.post(
            hooked.base + f"/hooks/{hook['id']}",
            content=urlencode({**form, "Body": "evil@example.com"}),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio_signed(public, form),
            },
        )
    assert (answer.status_code, answer.content) == (204, b"")
    assert (forged.status_code, forged.json()["reason"]) == (401, "bad_signature")
    [run] = await wait_for_runs(hooked, 1)
    assert run["input"] == {"email": "sms@example.com", "from": "+15550001111"}


async def test_meta_signed_json_and_the_verification_get(hooked: Hooked) -> None:
    hook = await hooked.hook(
        auth={"scheme": "meta", "credential": "hook-secret"},
        input={"email": "{{ body.entry[0].changes[0].value.email }}"},
    )
    url = hooked.base + f"/hooks/{hook['id']}"
    body = json.dumps({"entry": [{"changes": [{"value": {"email": "m@example.com"}}]}]}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    check = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
    async with httpx.AsyncClient() as sender:
        answer = await sender.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        )
        verified = await sender.get(url, params={**check, "hub.verify_token": VERIFY_TOKEN})
        refused = await sender.get(url, params={**check, "hub.verify_token": "nope"})
        unauthenticated = await sender.get(url)  # the management read needs a token
    assert answer.status_code == 202, answer.text
    assert (verified.status_code, verified.text) == (200, "1158201444")
    assert verified.headers["content-type"].startswith("text/plain")
    assert (refused.status_code, refused.json()["reason"]) == (403, "verify_token")
    assert unauthenticated.status_code == 401
    [run] = await wait_for_runs(hooked, 1)
    assert run["input"] == {"email": "m@example.com"}
    [entry] = await hooked.audit("hook.verify")
    assert entry["detail"]["reason"] == "verify_token"


async def test_management_checks_what_it_stores(hooked: Hooked) -> None:
    bad = [
        ({"auth": {"scheme": "twilio", "credential": "hook-secret"}}, "/auth/credential"),
        ({"auth": {"scheme": "hmac", "credential": "nothing-here"}}, "/auth/credential"),
        ({"auth": HMAC_AUTH, "input": {"a": "{{ body. }}"}}, "/input/a"),
        (
            {"auth": HMAC_AUTH, "respond": {"mode": "on_finish", "timeout_s": 31}},
            "/respond/timeout_s",
        ),
        ({"auth": HMAC_AUTH, "dedupe": {"window_s": 5}}, "/dedupe"),
        ({"auth": HMAC_AUTH, "rate_limit": "lots"}, "/rate_limit"),
    ]
    for fields, pointer in bad:
        made = await hooked.http.post("/hooks", json={"workflow": "greeter", "name": "x", **fields})
        assert made.status_code == 422, made.text
        assert pointer in [e["pointer"] for e in made.json()["errors"]], made.json()
    await hooked.hook(auth=HMAC_AUTH, path="p1")
    again = await hooked.http.post(
        "/hooks", json={"workflow": "greeter", "name": "h", "auth": HMAC_AUTH}
    )
    assert again.status_code == 409
    listed = (await hooked.http.get("/hooks")).json()["items"]
    assert [h["name"] for h in listed] == ["h"]
    assert SECRET not in json.dumps(listed)
    assert (await hooked.http.delete("/hooks/h")).status_code == 204
    assert (await hooked.http.get("/hooks/h")).status_code == 404


async def test_rate_limit_and_media_type(hooked: Hooked) -> None:
    hook = await hooked.hook(auth=HMAC_AUTH, rate_limit="2/minute")
    url = hooked.base + f"/hooks/{hook['id']}"
    body = json.dumps({"email": "ada@example.com"}).encode()
    async with httpx.AsyncClient() as sender:
        text = await sender.post(
            url,
            content=b"hello",
            headers={**flowyard_signed(b"hello"), "Content-Type": "text/plain"},
        )
        second = await sender.post(url, content=body, headers=flowyard_signed(body))
        third = await sender.post(url, content=body, headers=flowyard_signed(body))
    assert (text.status_code, text.json()["reason"]) == (415, "unsupported_media_type")
    assert second.status_code == 202
    assert (third.status_code, third.json()["reason"]) == (429, "rate_limited")
    assert int(third.headers["Retry-After"]) >= 1
    assert len(await hooked.runs()) == 1


async def test_a_twilio_signed_json_body_is_covered_by_body_sha256(hooked: Hooked) -> None:
    public = "https://hooks.example.com/twilio/events"
    hook = await hooked.hook(
        auth={"scheme": "twilio", "credential": "twilio-main", "public_url": public}
    )
    body = json.dumps({"email": "json@example.com"}).encode()
    query = "bodySHA256=" + hashlib.sha256(body).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Twilio-Signature": twilio_signed(f"{public}?{query}", {}),
    }
    async with httpx.AsyncClient() as sender:
        answer = await sender.post(
            hooked.base + f"/hooks/{hook['id']}?{query}", content=body, headers=headers
        )
        tampered = await sender.post(
            hooked.base + f"/hooks/{hook['id']}?{query}", content=body + b" ", headers=headers
        )
        # A signature of the bare URL does not vouch for a JSON body.
        unsigned_body = await sender.post(
            hooked.base + f"/hooks/{hook['id']}",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Twilio-Signature": twilio_signed(public, {}),
            },
        )
    assert answer.status_code == 202, answer.text
    assert (tampered.status_code, tampered.json()["reason"]) == (401, "bad_signature")
    assert (unsigned_body.status_code, unsigned_body.json()["reason"]) == (401, "bad_signature")


async def test_respond_on_finish_answers_202_when_the_run_is_still_going(hooked: Hooked) -> None:
    waiter = {
        "name": "waiter",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "wait"},
            {"id": "wait", "type": "wait_for_signal", "config": {"signal": "go"}, "next": "done"},
            {"id": "done", "type": "end"},
        ],
    }
    assert (await hooked.http.post("/workflows", json=waiter)).status_code == 201
    made = await hooked.http.post(
        "/hooks",
        json={
            "workflow": "waiter",
            "name": "w",
            "auth": HMAC_AUTH,
            "respond": {"mode": "on_finish", "timeout_s": 0.5},
        },
    )
    assert made.status_code == 201, made.text
    body = b"{}"
    async with httpx.AsyncClient() as sender:
        answer = await sender.post(
            hooked.base + f"/hooks/{made.json()['id']}", content=body, headers=flowyard_signed(body)
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] in ("pending", "running", "waiting")
    assert answer.json()["output"] is None
