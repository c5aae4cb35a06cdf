"""Credentials go only to the origins they name: origin syntax, the API and CLI that set them,
provider defaults, rows from before origins existed, the reviewer's attacks (run-start vars
and an editor's definition pointing a credential elsewhere) and redirects to other origins."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from flowyard.bootstrap import Container
from flowyard.cli.main import app
from flowyard.domain.auth import Role
from flowyard.domain.credentials import CredentialType
from flowyard.domain.errors import InvalidInput
from flowyard.domain.statuses import RunStatus
from flowyard.outbound import OriginError, origin_of, parse_origin
from flowyard.outbound.origins import admits, provider_origins
from support.auth import auth_headers
from support.http import Recorded, RecordingServer, Reply
from support.runs import run_definition

API = "/api/v1"
TOKEN = "tok-ORIGIN-5f4e3d2c1b"
PASSWORD = "pw-ORIGIN-0a9b8c7d6e"
API_KEY = "key-ORIGIN-1q2w3e4r5t"
SF = {
    "instance_url": "https://acme.my.salesforce.com",
    "client_id": "cid",
    "client_secret": "cs-secret",
    "refresh_token": "rt-secret",
}


@pytest.fixture
def other() -> Any:
    """A second server: another origin (same host, another port)."""
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_origins_are_normalised() -> None:
    assert str(parse_origin("HTTPS://API.Example.COM:443/")) == "https://api.example.com"
    assert str(parse_origin("http://example.com:80")) == "http://example.com"
    assert str(parse_origin("http://example.com:8080")) == "http://example.com:8080"
    assert str(parse_origin("https://Bücher.example")) == "https://xn--bcher-kva.example"
    assert str(parse_origin("http://[::1]:9000")) == "http://[::1]:9000"
    assert str(parse_origin("https://*.My.Salesforce.com")) == "https://*.my.salesforce.com"
    assert str(parse_origin("smtp://smtp.example.com:587")) == "smtp://smtp.example.com:587"
    for bad in (
        "api.example.com",  # no scheme
        "https://api.example.com/v1",  # a path
        "https://user:pw@api.example.com",  # userinfo
        "https://api.example.com?x=1",
        "ftp://files.example.com",
        "https://a.*.example.com",
        "https://*.com",  # too broad
        "https://*.10.0.0.1",
        "https://exa mple.com",
        "https://example.com:0",
        "smtp://smtp.example.com",  # smtp needs its port
    ):
        with pytest.raises(OriginError):
            parse_origin(bad)


def test_matching() -> None:
    allowed = ["https://api.example.com", "https://*.my.salesforce.com"]
    assert admits(allowed, "https://API.example.com:443/v1/x?y=1")
    assert admits(allowed, "https://acme.my.salesforce.com/services")
    assert admits(allowed, "https://acme--dev.sandbox.my.salesforce.com/")
    for url in (
        "http://api.example.com/",  # another scheme
        "https://api.example.com:8443/",  # another port
        "https://api.example.com.evil.io/",
        "https://evilapi.example.com/",
        "https://my.salesforce.com/",  # the wildcard's domain itself
        "https://my.salesforce.com.evil.io/",
    ):
        assert not admits(allowed, url), url
    # Numeric hosts compare as written: no credential follows 127.0.0.1 to 2130706433.
    assert not admits(["http://127.0.0.1"], "http://2130706433/")
    assert str(origin_of("http://127.0.0.1:8000/x")) == "http://127.0.0.1:8000"


def test_provider_defaults() -> None:
    assert provider_origins(CredentialType.SALESFORCE_OAUTH, SF) == [
        "https://acme.my.salesforce.com",
        "https://login.salesforce.com",
    ]
    sandbox = {**SF, "token_url": "https://test.salesforce.com/services/oauth2/token"}
    assert provider_origins(CredentialType.SALESFORCE_OAUTH, sandbox) == [
        "https://acme.my.salesforce.com",
        "https://test.salesforce.com",
    ]
    twilio = {"account_sid": "AC1", "auth_token": "x"}
    assert provider_origins(CredentialType.TWILIO, twilio) == ["https://api.twilio.com"]
    smtp = {"host": "Smtp.Example.com", "port": 465}
    assert provider_origins(CredentialType.SMTP, smtp) == ["smtp://smtp.example.com:465"]
    assert provider_origins(CredentialType.BEARER, {"token": "t"}) is None


async def test_api_requires_validates_and_shows_origins(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    base = {"name": "crm", "type": "bearer", "data": {"token": TOKEN}}
    for type_, data in (
        ("bearer", {"token": TOKEN}),
        ("basic", {"username": "u", "password": PASSWORD}),
        ("api_key_header", {"value": API_KEY}),
        ("custom", {"k": TOKEN}),
    ):
        missing = await anon.post(
            f"{API}/credentials", json={"name": "x", "type": type_, "data": data}, headers=admin
        )
        assert missing.status_code == 422, missing.text
        assert [e["pointer"] for e in missing.json()["errors"]] == ["/allowed_origins"]
        assert TOKEN not in missing.text and PASSWORD not in missing.text
    bad = await anon.post(
        f"{API}/credentials",
        json={**base, "allowed_origins": ["https://ok.example", "https://x.example/path", ""]},
        headers=admin,
    )
    assert bad.status_code == 422
    assert [e["pointer"] for e in bad.json()["errors"]] == [
        "/allowed_origins/1",
        "/allowed_origins/2",
    ]
    empty = await anon.post(
        f"{API}/credentials", json={**base, "allowed_origins": []}, headers=admin
    )
    assert empty.status_code == 422

    made = await anon.post(
        f"{API}/credentials",
        json={
            **base,
            "allowed_origins": ["HTTPS://CRM.example.com:443", "https://crm.example.com"],
        },
        headers=admin,
    )
    assert made.status_code == 201, made.text
    assert made.json()["allowed_origins"] == ["https://crm.example.com"]
    assert made.json()["data"] == {"token": "********"}

    changed = await anon.put(
        f"{API}/credentials/crm",
        json={"allowed_origins": ["https://*.crm.example.com"], "version": 1},
        headers=admin,
    )
    assert changed.status_code == 200 and changed.json()["version"] == 2
    assert changed.json()["allowed_origins"] == ["https://*.crm.example.com"]
    assert changed.json()["data"] == {"token": "********"}
    reset = await anon.put(f"{API}/credentials/crm", json={"allowed_origins": None}, headers=admin)
    assert reset.status_code == 422  # a bearer credential has no default
    kept = await anon.put(f"{API}/credentials/crm", json={"description": "CRM"}, headers=admin)
    assert kept.json()["allowed_origins"] == ["https://*.crm.example.com"]
    resolved = await container.credential_resolver.get("crm")
    assert resolved.allowed_origins == ("https://*.crm.example.com",)

    sf = await anon.post(
        f"{API}/credentials",
        json={"name": "sf", "type": "salesforce_oauth", "data": SF},
        headers=admin,
    )
    assert sf.status_code == 201, sf.text
    assert sf.json()["allowed_origins"] == [
        "https://acme.my.salesforce.com",
        "https://login.salesforce.com",
    ]
    narrowed = await anon.put(
        f"{API}/credentials/sf",
        json={"allowed_origins": ["https://acme.my.salesforce.com"]},
        headers=admin,
    )
    assert narrowed.json()["allowed_origins"] == ["https://acme.my.salesforce.com"]
    back = await anon.put(f"{API}/credentials/sf", json={"allowed_origins": None}, headers=admin)
    assert back.status_code == 200
    assert back.json()["allowed_origins"][0] == "https://acme.my.salesforce.com"
    moved = await anon.put(
        f"{API}/credentials/sf",
        json={"data": {**SF, "instance_url": "https://beta.my.salesforce.com"}},
        headers=admin,
    )
    assert moved.json()["allowed_origins"][0] == "https://beta.my.salesforce.com"
    listed = await anon.get(f"{API}/credentials", headers=admin)
    assert {c["name"]: c["allowed_origins"] for c in listed.json()["items"]} == {
        "crm": ["https://*.crm.example.com"],
        "sf": ["https://beta.my.salesforce.com", "https://login.salesforce.com"],
    }
    for response in (made, changed, sf, listed):
        assert TOKEN not in response.text and "cs-secret" not in response.text


def definition(url: str, credential: str, **config: Any) -> dict[str, Any]:
    return {
        "name": f"call-{credential}",
        "vars": {"target": url},
        "start": "call",
        "nodes": [
            {
                "id": "call",
                "type": "http",
                "config": {"url": "{{ vars.target }}", "credential": credential, **config},
                "retry": {"max_attempts": 3, "initial_interval_s": 0.01},
            }
        ],
    }


async def add(container: Container, origin: str) -> None:
    svc = container.credentials
    await svc.create("tok", CredentialType.BEARER, {"token": TOKEN}, allowed_origins=[origin])
    await svc.create(
        "erp",
        CredentialType.BASIC,
        {"username": "svc", "password": PASSWORD},
        allowed_origins=[origin],
    )
    await svc.create(
        "key",
        CredentialType.API_KEY_HEADER,
        {"header": "X-Secret-Key", "value": API_KEY},
        allowed_origins=[origin],
    )


def secret_headers(requests: list[Recorded]) -> list[str]:
    """Every credential value any of ``requests`` carried, in any header."""
    basic = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    return [
        value
        for r in requests
        for value in r.headers.values()
        if any(s in value for s in (TOKEN, PASSWORD, API_KEY, basic))
    ]


async def test_run_start_vars_cannot_redirect_a_credential(
    anon: httpx.AsyncClient,
    container: Container,
    http_server: RecordingServer,
    other: RecordingServer,
) -> None:
    """The reviewer's attack: the definition's ``vars.target`` is the allowed service; an
    operator starts a run with ``vars.target`` pointing at their own server."""
    await add(container, http_server.url)
    admin = await auth_headers(container)
    saved = await anon.post(
        f"{API}/workflows", json=definition(f"{http_server.url}/api", "tok"), headers=admin
    )
    assert saved.status_code == 201, saved.text
    operator = await auth_headers(container, "op", Role.OPERATOR)
    attack = await anon.post(
        f"{API}/workflows/call-tok/runs",
        json={"input": {}, "vars": {"target": f"{other.url}/x"}},
        headers=operator,
    )
    assert attack.status_code == 422, attack.text
    assert [e["pointer"] for e in attack.json()["errors"]] == ["/vars/target"]
    assert attack.json()["errors"][0]["code"] == "protected_var"
    harmless = await anon.post(
        f"{API}/workflows/call-tok/runs",
        json={"input": {}, "vars": {"note": "hello"}},
        headers=operator,
    )
    assert harmless.status_code == 202, harmless.text
    assert other.requests == []

    # Any other use of ``vars`` in such a field protects every var of the workflow.
    wholesale = definition("", "tok")
    wholesale["name"] = "wholesale"
    wholesale["nodes"][0]["config"]["headers"] = {"X-All": "{{ vars | tojson }}"}
    assert (await anon.post(f"{API}/workflows", json=wholesale, headers=admin)).status_code == 201
    refused = await anon.post(
        f"{API}/workflows/wholesale/runs",
        json={"input": {}, "vars": {"note": "x", "other": 1}},
        headers=operator,
    )
    assert refused.status_code == 422
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/vars/note", "/vars/other"]


async def test_a_definition_cannot_send_a_credential_elsewhere(
    container: Container, http_server: RecordingServer, other: RecordingServer
) -> None:
    """An editor's definition (or a run input) pointing the credential at another origin:
    the step fails permanently and nothing is sent."""
    await add(container, http_server.url)
    for name in ("tok", "erp", "key"):
        detail = await run_definition(container, definition(f"{other.url}/steal", name))
        assert detail.run.status is RunStatus.FAILED
        [step] = detail.steps  # permanent: no retry
        assert step.error is not None
        assert step.error["type"] == "credential.origin_not_allowed"
        assert step.error["transient"] is False
        assert step.error["details"] == {
            "credential": name,
            "origin": other.url,
            "allowed_origins": [http_server.url],
        }
    by_input = definition("", "tok")
    by_input["nodes"][0]["config"]["url"] = "{{ input.url }}"
    detail = await run_definition(container, by_input, {"url": f"{other.url}/steal"})
    assert detail.steps[0].error is not None
    assert detail.steps[0].error["type"] == "credential.origin_not_allowed"
    assert other.requests == [] and http_server.requests == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_to_another_origin_carry_no_credential(
    container: Container, http_server: RecordingServer, other: RecordingServer, status: int
) -> None:
    await add(container, http_server.url)
    http_server.on("/start", lambda _: Reply(status, {}, {"Location": f"{other.url}/landed"}))
    http_server.on("/same", lambda _: Reply(status, {}, {"Location": "/start-echo"}))
    expected = {
        "tok": ("Authorization", f"Bearer {TOKEN}"),
        "erp": ("Authorization", "Basic " + base64.b64encode(f"svc:{PASSWORD}".encode()).decode()),
        "key": ("X-Secret-Key", API_KEY),
    }
    for name, (header, value) in expected.items():
        before_first, before_other = len(http_server.requests), len(other.requests)
        detail = await run_definition(
            container,
            definition(
                f"{http_server.url}/start",
                name,
                follow_redirects=True,
                method="POST",
                json={"a": 1},
                headers={"Cookie": "c=1"},
            ),
        )
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
        [first] = http_server.requests[before_first:]
        [landed] = other.requests[before_other:]
        assert first.headers[header] == value
        assert header not in landed.headers and "Cookie" not in landed.headers
        assert secret_headers([landed]) == []
        assert landed.method == ("POST" if status in (307, 308) else "GET")
        assert landed.body == (b'{"a": 1}' if status in (307, 308) else b"")
        # A redirect within the allowed origin keeps the credential.
        same = await run_definition(
            container, definition(f"{http_server.url}/same", name, follow_redirects=True)
        )
        assert same.run.status is RunStatus.SUCCEEDED
        [echoed] = http_server.to("/start-echo")[-1:]
        assert echoed.headers[header] == value


async def test_a_row_without_origins_is_refused_until_an_admin_sets_them(
    container: Container, http_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential created before migration 0007 has no origins (NULL)."""
    await add(container, http_server.url)
    stored = await container.store.get_credential("tok")
    await container.store.update_credential(
        stored.record.id, {"allowed_origins": None}, stored.record.updated_at
    )
    container.credential_resolver.clear()
    assert (await container.credentials.get("tok")).allowed_origins == ()
    detail = await run_definition(container, definition(f"{http_server.url}/x", "tok"))
    error = detail.steps[0].error
    assert error is not None and error["type"] == "credential.origin_not_allowed"
    assert (
        "an admin must set them" in error["message"] and error["details"]["allowed_origins"] == []
    )
    assert http_server.requests == []

    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    db = container.settings.db_url

    async def cli(*args: str) -> Result:
        # The CLI runs its own event loop: off this one.
        return await asyncio.to_thread(runner.invoke, app, [*args, "--db", db])

    listed = await cli("credentials", "list")
    assert "(none: refused)" in listed.stdout
    fixed = await cli("credentials", "set-origins", "tok", "--allowed-origin", http_server.url)
    assert fixed.exit_code == 0, fixed.output
    shown = json.loads((await cli("credentials", "show", "tok")).stdout)
    assert shown["allowed_origins"] == [http_server.url] and shown["data"] == {"token": "********"}
    container.credential_resolver.clear()
    detail = await run_definition(container, definition(f"{http_server.url}/x", "tok"))
    assert detail.run.status is RunStatus.SUCCEEDED


def test_cli_create_requires_origins(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    data = tmp_path / "d.json"
    data.write_text(json.dumps({"token": TOKEN}))
    create = ["credentials", "create", "t", "--type", "bearer", "--data-file", str(data)]
    refused = runner.invoke(app, [*create, "--db", db_url])
    assert refused.exit_code == 2 and "/allowed_origins" in refused.stderr
    made = runner.invoke(
        app,
        [*create, "--allowed-origin", "https://A.example", "--allowed-origin",
         "https://*.b.example", "--db", db_url],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "https://a.example https://*.b.example" in made.stdout
    listed = runner.invoke(app, ["credentials", "list", "--db", db_url])
    assert "https://a.example" in listed.stdout
    both = runner.invoke(app, ["credentials", "set-origins", "t", "--db", db_url])
    assert both.exit_code != 0
    no_default = runner.invoke(
        app, ["credentials", "set-origins", "t", "--default", "--db", db_url]
    )
    assert no_default.exit_code == 2 and "/allowed_origins" in no_default.stderr
    for result in (refused, made, listed):
        assert TOKEN not in result.output


async def test_service_refuses_bad_origins_without_echoing_data(container: Container) -> None:
    with pytest.raises(InvalidInput) as info:
        await container.credentials.create(
            "x",
            CredentialType.BASIC,
            {"username": "u", "password": PASSWORD},
            allowed_origins=["https://u:p@x.example"],
        )
    assert [p.pointer for p in info.value.problems] == ["/allowed_origins/0"]
    assert PASSWORD not in repr(info.value.problems)


# -- review round 2 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["tenant-b.example", "TENANT-B.example:{port}", "127.0.0.1:1", "127.0.0.1", "", "a b"]
)
async def test_a_host_header_cannot_take_a_credential_to_another_site(
    container: Container, http_server: RecordingServer, host: str
) -> None:
    """A ``Host`` header naming another virtual host behind an allowed address: refused
    (``credential.origin_not_allowed``) before anything is sent, for every credential type,
    from a definition or from run input."""
    await add(container, http_server.url)
    port = http_server.url.rsplit(":", 1)[1]
    host = host.format(port=port)
    for name in ("tok", "erp", "key"):
        detail = await run_definition(
            container, definition(f"{http_server.url}/x", name, headers={"Host": host})
        )
        [step] = detail.steps
        assert step.error is not None and step.error["type"] == "credential.origin_not_allowed"
        assert step.error["transient"] is False
    by_input = definition(f"{http_server.url}/x", "tok", headers={"host": "{{ input.host }}"})
    detail = await run_definition(container, by_input, {"host": "tenant-b.example"})
    assert detail.steps[0].error is not None
    assert detail.steps[0].error["type"] == "credential.origin_not_allowed"
    assert http_server.requests == []


async def test_a_host_header_naming_the_url_itself_is_sent(
    container: Container, http_server: RecordingServer
) -> None:
    await add(container, http_server.url)
    port = http_server.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"127.0.0.1.:{port}"):
        detail = await run_definition(
            container, definition(f"{http_server.url}/x", "tok", headers={"Host": host})
        )
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert [r.headers["Authorization"] for r in http_server.to("/x")] == [f"Bearer {TOKEN}"] * 2


async def test_a_foreign_hop_never_hands_the_credential_back(
    container: Container, http_server: RecordingServer, other: RecordingServer
) -> None:
    """Allowed A answers 307 to B; B answers 307 back to A: A's second request carries no
    credential (nor does any later hop, even a redirect back to A's first path)."""
    await add(container, http_server.url)
    http_server.on("/upload", lambda _: Reply(307, {}, {"Location": f"{other.url}/bounce"}))
    other.on(
        "/bounce", lambda _: Reply(307, {}, {"Location": f"{http_server.url}/admin/delete-all"})
    )
    http_server.on("/admin/delete-all", lambda _: Reply(307, {}, {"Location": "/admin/again"}))
    for name in ("tok", "erp", "key"):
        detail = await run_definition(
            container,
            definition(
                f"{http_server.url}/upload",
                name,
                method="POST",
                json={"a": 1},
                follow_redirects=True,
            ),
        )
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert len(http_server.to("/upload")) == 3
    assert len(secret_headers(http_server.to("/upload"))) == 3
    assert secret_headers(other.requests) == []
    assert len(http_server.to("/admin/delete-all")) == 3
    assert secret_headers(http_server.to("/admin/delete-all")) == []
    assert secret_headers(http_server.to("/admin/again")) == []


async def test_userinfo_in_a_redirect_is_dropped(
    container: Container, http_server: RecordingServer, other: RecordingServer
) -> None:
    """httpx turns a URL's user:password into its own Basic header: a Location with userinfo
    must neither replace the credential on an allowed hop nor add a header elsewhere."""
    await add(container, http_server.url)
    same = http_server.url.replace("http://", "http://evil:pw@")
    http_server.on("/start", lambda _: Reply(302, {}, {"Location": f"{same}/landed"}))
    http_server.on(
        "/away",
        lambda _: Reply(
            302, {}, {"Location": f"{other.url.replace('http://', 'http://evil:pw@')}/x"}
        ),
    )
    detail = await run_definition(
        container, definition(f"{http_server.url}/start", "tok", follow_redirects=True)
    )
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [landed] = http_server.to("/landed")
    assert landed.headers["Authorization"] == f"Bearer {TOKEN}"
    await run_definition(
        container, definition(f"{http_server.url}/away", "tok", follow_redirects=True)
    )
    [away] = other.to("/x")
    assert "Authorization" not in away.headers


async def test_vars_read_through_dict_methods_are_protected(
    anon: httpx.AsyncClient, container: Container, http_server: RecordingServer
) -> None:
    """``vars.get('target')`` reads ``target``; ``vars.items()`` and friends read them all."""
    await add(container, http_server.url)
    admin = await auth_headers(container)
    operator = await auth_headers(container, "op", Role.OPERATOR)
    cases = {
        "{{ vars.get('target') }}": ["/vars/target"],
        "{{ vars.get('target', 'x') }}": ["/vars/target"],
        "{{ (vars.items() | list)[0][1] }}": ["/vars/target", "/vars/note"],
        "{{ vars.values() | first }}": ["/vars/target", "/vars/note"],
        "{{ vars['keys']() | first }}": ["/vars/target", "/vars/note"],
    }
    for index, (url, pointers) in enumerate(cases.items()):
        made = definition("", "tok")
        made["name"] = f"methods-{index}"
        made["nodes"][0]["config"]["url"] = url
        made["vars"] = {"target": f"{http_server.url}/api", "note": "n"}
        saved = await anon.post(f"{API}/workflows", json=made, headers=admin)
        assert saved.status_code == 201, saved.text
        refused = await anon.post(
            f"{API}/workflows/methods-{index}/runs",
            json={"input": {}, "vars": {"target": "http://127.0.0.1:1/x", "note": "m"}},
            headers=operator,
        )
        assert refused.status_code == 422, (url, refused.text)
        assert [e["pointer"] for e in refused.json()["errors"]] == pointers, url


def test_a_wildcard_never_matches_an_address() -> None:
    for bad in ("https://*.0.0.1", "https://*.example.123", "https://*.a.0x7f", "http://*.1.1:80"):
        with pytest.raises(OriginError):
            parse_origin(bad)
    # A pattern written into the database by hand is not trusted to be well formed.
    from flowyard.outbound.origins import Origin

    assert not Origin("https", "0.0.1", 443, wildcard=True).admits(origin_of("https://127.0.0.1"))
    assert not admits(["https://*.0.0.1"], "https://127.0.0.1/")
    assert not admits(["not an origin", "https://*.0.0.1"], "https://127.0.0.1/")
    assert admits(["not an origin", "https://ok.example"], "https://ok.example/")


async def test_a_hand_edited_stored_origin_is_a_refusal_not_an_internal_error(
    container: Container, http_server: RecordingServer
) -> None:
    await add(container, http_server.url)
    stored = await container.store.get_credential("tok")
    await container.store.update_credential(
        stored.record.id,
        {"allowed_origins": ["garbage", "https://*.0.0.1"]},
        stored.record.updated_at,
    )
    container.credential_resolver.clear()
    detail = await run_definition(container, definition(f"{http_server.url}/x", "tok"))
    [step] = detail.steps
    assert step.error is not None and step.error["type"] == "credential.origin_not_allowed"
    assert http_server.requests == []
