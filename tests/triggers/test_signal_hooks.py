"""A hook that delivers a signal instead of starting a run: a Twilio-signed inbound SMS wakes
the run whose correlation key is the sender's phone number (issue 12's acceptance line)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import httpx

from triggers.conftest import Hooked
from triggers.test_webhooks import twilio_signed

CAMPAIGN: dict[str, Any] = {
    "name": "campaign",
    "correlation": {"key": "{{ input.phone }}", "unique": True},
    "signals": ["reply_received"],
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "wait"},
        {
            "id": "wait",
            "type": "wait_for_signal",
            "config": {"signal": "reply_received"},
            "next": "done",
        },
        {"id": "done", "type": "end", "config": {"output": "{{ steps.wait.output.payload }}"}},
    ],
}
PUBLIC = "https://hooks.example.com/sms/replies"


def sms(sender: str, text: str, sid: str) -> tuple[str, dict[str, str]]:
    form = {"From": sender, "Body": text, "MessageSid": sid}
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signed(PUBLIC, form),
    }
    return urlencode(form), headers


async def test_a_twilio_sms_wakes_the_run_of_that_phone_number(hooked: Hooked) -> None:
    made = await hooked.http.post("/workflows", json=CAMPAIGN)
    assert made.status_code == 201, made.text
    runs = {}
    for phone in ("+15550001111", "+15550002222"):
        started = await hooked.http.post(
            "/workflows/campaign/runs", json={"input": {"phone": phone}}
        )
        assert started.status_code == 202, started.text
        runs[phone] = started.json()["id"]
    made = await hooked.http.post(
        "/hooks",
        json={
            "workflow": "campaign",
            "name": "sms-replies",
            "auth": {"scheme": "twilio", "credential": "twilio-main", "public_url": PUBLIC},
            "input": {"text": "{{ form.Body }}"},
            "action": {"signal": {"name": "reply_received", "correlation_key": "{{ form.From }}"}},
            "dedupe": {"body": "/MessageSid"},
        },
    )
    assert made.status_code == 201, made.text
    url = hooked.base + f"/hooks/{made.json()['id']}"
    async with httpx.AsyncClient() as twilio:
        content, headers = sms("+15550002222", "yes please", "SM1")
        answer = await twilio.post(url, content=content, headers=headers)
        repeat = await twilio.post(url, content=content, headers=headers)
        content, headers = sms("+15559999999", "who is this", "SM2")
        stranger = await twilio.post(url, content=content, headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["run_id"] == runs["+15550002222"]
    assert (repeat.status_code, repeat.json()["created"]) == (200, False)
    assert (stranger.status_code, stranger.json()["reason"]) == (404, "no_run")
    async with asyncio.timeout(20):
        while (run := (await hooked.http.get(f"/runs/{runs['+15550002222']}")).json())[
            "status"
        ] != "succeeded":
            await asyncio.sleep(0.05)
    assert run["output"] == {"text": "yes please"}
    signals = (await hooked.http.get(f"/runs/{runs['+15550002222']}/signals")).json()["items"]
    assert [s["name"] for s in signals] == ["reply_received"]  # the repeat delivered nothing
    other = (await hooked.http.get(f"/runs/{runs['+15550001111']}")).json()
    assert other["status"] == "waiting"
