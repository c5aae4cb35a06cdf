"""Credentials at run time: the http node authenticates with them, the worker resolves them,
and their secrets are redacted from outputs, errors, events, the database and the logs."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from flowyard.bootstrap import Container
from flowyard.domain.credentials import REDACTED, CredentialType
from flowyard.domain.statuses import RunStatus
from flowyard.service import RunDetail
from support.auth import auth_headers
from support.dbdump import dump_database
from support.http import Recorded, RecordingServer, Reply
from support.runs import run_definition, wait_for_runs

TOKEN = "tok-ABCDEF-0123456789"
PASSWORD = "pw-ZYXWVU-9876543210"
API_KEY = "key-QWERTY-5647382910"


def echo(status: int = 200) -> Any:
    """A handler answering with every request header it got."""

    def handler(rec: Recorded) -> Reply:
        return Reply(status, {"headers": rec.headers, "said": f"you sent {rec.headers}"})

    return handler


def workflow(url: str, credential: str, **config: Any) -> dict[str, Any]:
    return {
        "name": f"call-{credential}",
        "start": "call",
        "nodes": [
            {
                "id": "call",
                "type": "http",
                "config": {"url": url, "credential": credential, **config},
                "retry": {"max_attempts": 1},
            }
        ],
    }


async def add_credentials(container: Container, origin: str = "https://x.example") -> None:
    svc = container.credentials
    origins = [origin]
    await svc.create("tok", CredentialType.BEARER, {"token": TOKEN}, allowed_origins=origins)
    await svc.create(
        "erp",
        CredentialType.BASIC,
        {"username": "svc", "password": PASSWORD},
        allowed_origins=origins,
    )
    await svc.create(
        "weather",
        CredentialType.API_KEY_HEADER,
        {"header": "X-Key", "value": API_KEY},
        allowed_origins=origins,
    )
    await svc.create("mail", CredentialType.SMTP, {"host": "smtp.x", "password": PASSWORD})


def text_of(detail: RunDetail) -> str:
    parts: list[Any] = [detail.run.output, detail.run.error]
    parts += [(s.output, s.error) for s in detail.steps]
    parts += [e.data for e in detail.events]
    return json.dumps(parts, default=str)


def assert_clean(text: str) -> None:
    basic = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    for secret in (TOKEN, PASSWORD, API_KEY, basic):
        assert secret not in text


async def test_each_type_sends_its_header_and_the_echo_is_redacted(
    container: Container, http_server: RecordingServer
) -> None:
    await add_credentials(container, http_server.url)
    http_server.on("/echo", echo())
    url = f"{http_server.url}/echo"
    expected = {
        "tok": ("Authorization", f"Bearer {TOKEN}"),
        "erp": ("Authorization", "Basic " + base64.b64encode(f"svc:{PASSWORD}".encode()).decode()),
        "weather": ("X-Key", API_KEY),
    }
    for name, (header, value) in expected.items():
        before = len(http_server.requests)
        # A header of the same name in the config loses to the credential.
        detail = await run_definition(
            container, workflow(url, name, headers={header.lower(): "from-config"})
        )
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
        [request] = http_server.requests[before:]
        assert request.headers[header] == value
        assert "from-config" not in request.headers.values()
        output = detail.steps[0].output
        assert output["body"]["headers"][header] == (
            "Bearer ***" if name == "tok" else ("Basic ***" if name == "erp" else "***")
        )
        assert "***" in output["body"]["said"]
        assert_clean(text_of(detail))


async def test_an_error_echoing_the_secret_is_redacted(
    container: Container, http_server: RecordingServer
) -> None:
    await add_credentials(container, http_server.url)
    http_server.on("/fail", echo(400))
    detail = await run_definition(container, workflow(f"{http_server.url}/fail", "tok"))
    assert detail.run.status is RunStatus.FAILED
    step_error = detail.steps[0].error
    assert step_error is not None and step_error["type"] == "http.400"
    assert step_error["details"]["body"]["headers"]["Authorization"] == "Bearer ***"
    assert detail.run.error is not None and "***" in json.dumps(detail.run.error)
    failed = [e for e in detail.events if e.type == "step.failed"]
    assert failed and "Bearer ***" in json.dumps(failed[0].data)
    assert_clean(text_of(detail))


@pytest.mark.parametrize("offset", [1, 5, len(TOKEN) - 1])
async def test_a_secret_cut_by_the_error_body_limit_is_still_redacted(
    container: Container, http_server: RecordingServer, offset: int
) -> None:
    """An error body over 4096 bytes is cut for the error details; a secret straddling the
    cut must not leave its first characters behind."""
    await add_credentials(container, http_server.url)
    body = b"a" * (4096 - offset) + TOKEN.encode() + b"b" * 100
    http_server.on("/big", lambda _: Reply(400, body))
    detail = await run_definition(container, workflow(f"{http_server.url}/big", "tok"))
    step_error = detail.steps[0].error
    assert step_error is not None and step_error["type"] == "http.400"
    cut = step_error["details"]["body"]
    assert cut.startswith("a" * 100) and len(cut) <= 4096
    rest = cut.lstrip("a")
    assert (REDACTED + "b" * 100).startswith(rest), rest
    assert_clean(text_of(detail))


async def test_unknown_and_unusable_credentials_fail_the_step(
    container: Container, http_server: RecordingServer
) -> None:
    await add_credentials(container, http_server.url)
    url = f"{http_server.url}/x"
    wrong = await run_definition(container, workflow(url, "mail"))
    assert wrong.run.status is RunStatus.FAILED
    assert wrong.steps[0].error is not None and wrong.steps[0].error["type"] == "credential.type"

    record, _, _ = await container.service.save_workflow(workflow(url, "tok"))
    await container.credentials.delete("tok")
    container.credential_resolver.clear()
    run, _ = await container.service.start_run(record.id, {})
    await wait_for_runs(container, [run.id])
    gone = await container.service.get_run(run.id)
    assert gone.run.status is RunStatus.FAILED
    error = gone.steps[0].error
    assert error is not None and error["type"] == "credential.not_found"
    assert error["transient"] is False
    assert len(http_server.requests) == 0  # nothing was sent without its credential


async def test_resolution_is_cached_briefly(container: Container) -> None:
    await add_credentials(container)
    clock = [0.0]
    resolver = container.credentials.resolver(ttl_s=5)
    resolver.monotonic = lambda: clock[0]
    assert (await resolver.get("tok")).values["token"] == TOKEN
    await container.credentials.update("tok", data={"token": "newer-token"})
    assert (await resolver.get("tok")).values["token"] == TOKEN  # still cached
    clock[0] = 5.1
    assert (await resolver.get("tok")).values["token"] == "newer-token"


async def test_the_secret_is_nowhere_in_database_logs_or_audit(
    anon: httpx.AsyncClient,
    container: Container,
    http_server: RecordingServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = await auth_headers(container)
    for body in (
        {"name": "tok", "type": "bearer", "data": {"token": TOKEN}},
        {"name": "erp", "type": "basic", "data": {"username": "svc", "password": PASSWORD}},
        {"name": "weather", "type": "api_key_header", "data": {"value": API_KEY}},
    ):
        body["allowed_origins"] = [http_server.url]
        made = await anon.post("/api/v1/credentials", json=body, headers=admin)
        assert made.status_code == 201, made.text
    await anon.put(
        "/api/v1/credentials/tok", json={"data": {"token": TOKEN}, "version": 1}, headers=admin
    )
    await anon.post(  # refused: the secret in a 422 must not leak either
        "/api/v1/credentials",
        json={"name": "bad", "type": "bearer", "data": {"token": TOKEN, "x": PASSWORD}},
        headers=admin,
    )
    http_server.on("/ok", echo())
    http_server.on("/fail", echo(400))
    runs = [
        await run_definition(container, workflow(f"{http_server.url}/ok", "tok")),
        await run_definition(container, workflow(f"{http_server.url}/fail", "erp")),
        await run_definition(container, workflow(f"{http_server.url}/ok", "weather")),
    ]
    assert [r.run.status for r in runs] == [
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.SUCCEEDED,
    ]
    assert len(http_server.requests) == 3

    dump = await dump_database(container.settings.db_url)
    assert "== credentials" in dump and "cred_" in dump  # the dump is real
    assert "Bearer ***" in dump and "Basic ***" in dump
    assert_clean(dump)
    assert_clean(caplog.text)
    audit = await anon.get("/api/v1/audit", params={"limit": 500}, headers=admin)
    assert "credential.create" in audit.text
    assert_clean(audit.text)
    for run in runs:
        response = await anon.get(f"/api/v1/runs/{run.run.id}", headers=admin)
        assert response.status_code == 200
        assert_clean(response.text)


def transformed(secret: str) -> dict[str, str]:
    """The forms of ``secret`` an upstream may echo back."""
    raw = secret.encode()
    return {
        "upper": secret.upper(),
        "lower": secret.lower(),
        "b64": base64.b64encode(raw).decode(),
        "b64url": base64.urlsafe_b64encode(b"~~" + raw).decode(),
        "quoted": quote(f"token={secret}&x=1", safe=""),
    }


def assert_no_form(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        for name, form in transformed(secret).items():
            core = form[2:-2] if name.startswith("b64") else form  # alignment-independent part
            assert core not in text, (name, form)
            assert secret.lower() not in text.lower()


async def test_transformed_echoes_never_reach_the_database_or_the_api(
    anon: httpx.AsyncClient, container: Container, http_server: RecordingServer
) -> None:
    """An upstream echoing the credential in upper case, base64 (of the value or of the
    basic pair) or URL-encoded: none of it reaches step rows, run rows, events or the API,
    nor the scope of the next step."""
    await add_credentials(container, http_server.url)

    def mangle(status: int) -> Any:
        def handler(rec: Recorded) -> Reply:
            # The forms of what this request carried (an upstream can only echo that).
            auth = rec.headers.get("Authorization", "")
            received = [rec.headers.get("X-Key", "")]
            if auth.startswith("Bearer "):
                received.append(auth.removeprefix("Bearer "))
            if auth.startswith("Basic "):
                pair = base64.b64decode(auth.removeprefix("Basic ")).decode()
                received += [pair, pair.split(":", 1)[1]]
            forms = [transformed(secret) for secret in received if secret]
            return Reply(
                status,
                {"auth": auth.upper(), "forms": forms, "basic": auth.split(" ")[-1].lower()},
                {"X-Echo": auth.upper() or "none"},
            )

        return handler

    http_server.on("/ok", mangle(200))
    http_server.on("/fail", mangle(400))
    admin = await auth_headers(container)
    details = []
    for path, name in (("/ok", "tok"), ("/ok", "erp"), ("/fail", "weather"), ("/fail", "erp")):
        definition = workflow(f"{http_server.url}{path}", name)
        definition["name"] = f"mangle-{name}-{path[1:]}"
        definition["nodes"][0]["next"] = "copy"
        definition["nodes"][0]["catch"] = [{"errors": ["*"], "next": "copy"}]
        definition["nodes"].append(
            {"id": "copy", "type": "set", "config": {"values": {"seen": "{{ steps.call }}"}}}
        )
        details.append(await run_definition(container, definition))
    assert [d.run.status for d in details] == [RunStatus.SUCCEEDED] * 4
    assert details[0].steps[0].output["body"]["auth"] == "BEARER ***"
    secrets = [TOKEN, PASSWORD, API_KEY]
    for detail in details:
        assert_no_form(text_of(detail), secrets)
        for path in ("", "/steps", "/events"):
            response = await anon.get(f"/api/v1/runs/{detail.run.id}{path}", headers=admin)
            assert response.status_code == 200
            assert_no_form(response.text, secrets)
    assert_no_form(await dump_database(container.settings.db_url), secrets)


async def test_the_stored_output_is_what_the_node_type_declares(
    container: Container, http_server: RecordingServer
) -> None:
    detail = await run_definition(
        container,
        {"name": "plain", "start": "call", "nodes": [
            {"id": "call", "type": "http", "config": {"url": f"{http_server.url}/p"}}
        ]},
    )  # fmt: skip
    output = detail.steps[0].output
    assert set(output) == {"status", "headers", "body"} and output["body"] == {"ok": True}
    schema = container.registry.describe()
    http_entry = next(e for e in schema if e["type"] == "http")
    assert set(http_entry["output_schema"]["properties"]) == {"status", "headers", "body"}
