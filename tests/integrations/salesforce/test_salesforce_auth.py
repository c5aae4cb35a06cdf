"""The ``salesforce_oauth`` authenticator end to end (the three OAuth flows, token endpoint
errors, the token cache and its renewal, allowed origins) and the secrets of a
``salesforce`` step: nowhere in outputs, errors, events, logs or the database."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from fakes.salesforce import SESSION_EXPIRED, FakeSalesforce
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType, ResolvedCredential, parse_data
from flowyard.domain.statuses import RunStatus
from flowyard.integrations.salesforce import SalesforceAuth
from flowyard.outbound import AuthContext, Outbound, provider_origins
from support.dbdump import dump_database
from support.runs import wait_for_runs
from support.salesforce import (
    CLIENT_ID,
    CLIENT_SECRET,
    LEAD,
    PRIVATE_PEM,
    PUBLIC_PEM,
    REFRESH_TOKEN,
    USERNAME,
    add_credential,
    error,
    keypair,
    run,
    sf,
)

# -- OAuth -------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", ["refresh_token", "client_credentials", "jwt_bearer"])
async def test_each_oauth_flow_gets_a_token(
    container: Container, fake: FakeSalesforce, flow: str
) -> None:
    await add_credential(container, fake, flow=flow)
    detail = await run(container, sf("create", "create", object="Lead", fields=LEAD))
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [grant] = fake.of("token")
    form = {k: v[0] for k, v in parse_qs(grant.body.decode()).items()}
    assert grant.headers["Content-Type"] == "application/x-www-form-urlencoded"
    if flow == "refresh_token":
        assert form == {
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
        }
    elif flow == "client_credentials":
        assert form == {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
    else:
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        claims = jwt.decode(form["assertion"], PUBLIC_PEM, algorithms=["RS256"], audience=fake.url)
        assert (claims["iss"], claims["sub"]) == (CLIENT_ID, USERNAME)
        assert 0 < claims["exp"] - time.time() <= 180
        assert jwt.get_unverified_header(form["assertion"])["alg"] == "RS256"
    [create] = fake.of("create")
    assert create.headers["Authorization"].startswith("Bearer 00D")


async def test_token_endpoint_errors(container: Container, fake: FakeSalesforce) -> None:
    await add_credential(container, fake, "bad-refresh", refresh_token="rt-revoked-000000")
    await add_credential(
        container, fake, "bad-secret", flow="client_credentials", client_secret="cs-wrong-00000000"
    )
    await add_credential(
        container,
        fake,
        "bad-key",
        flow="jwt_bearer",
        private_key="-----BEGIN PRIVATE KEY-----\nnot a key\n",
    )
    other_private, _ = keypair()
    await add_credential(container, fake, "other-key", flow="jwt_bearer", private_key=other_private)
    await add_credential(container, fake, "sf")
    cases = [
        ("bad-refresh", "salesforce.auth_invalid_grant", False),
        ("bad-secret", "salesforce.auth_invalid_client", False),
        ("bad-key", "salesforce.auth_invalid_private_key", False),
        ("other-key", "salesforce.auth_invalid_grant", False),
    ]
    for name, error_type, transient in cases:
        detail = await run(
            container, sf("c", "create", credential=name, object="Lead", fields=LEAD)
        )
        found = error(detail, "c")
        assert (found["type"], found["transient"]) == (error_type, transient), (name, found)
    fake.fail(
        503,
        b"<html>maintenance</html>",
        match="token",
        content_type="text/html",
        headers={"Retry-After": "3"},
    )
    found = error(await run(container, sf("c", "create", object="Lead", fields=LEAD)), "c")
    assert (found["type"], found["transient"]) == ("salesforce.auth_http_503", True)
    assert found["details"]["retry_after_s"] == 3.0
    fake.fail(0, b"", match="token")  # the connection drops
    found = error(await run(container, sf("c", "create", object="Lead", fields=LEAD)), "c")
    assert (found["type"], found["transient"]) == ("salesforce.auth_network", True)
    fake.audience = "https://login.salesforce.com"
    await add_credential(container, fake, "jwt", flow="jwt_bearer")
    found = error(
        await run(container, sf("c", "create", credential="jwt", object="Lead", fields=LEAD)), "c"
    )
    assert found["type"] == "salesforce.auth_invalid_grant"
    assert found["details"]["error_description"] == "audience is invalid"
    assert fake.calls["create"] == 0


async def test_a_token_is_cached_per_credential_and_a_new_one_follows_an_edit(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    fake.add_app(CLIENT_ID, refresh_token="rt-second-0000000000")
    node = sf("c", "create", object="Lead", fields={"LastName": "{{ input.n }}", "Company": "A"})
    # Two runs at once: one token request between them (one in-flight refresh).
    record, _, _ = await container.service.save_workflow(
        {"name": "twice", "start": "c", "nodes": [node]}
    )
    runs = [(await container.service.start_run(record.id, {"n": str(n)}))[0] for n in range(2)]
    await wait_for_runs(container, [r.id for r in runs])
    assert fake.calls["token"] == 1 and fake.calls["create"] == 2
    # An edited credential (a new refresh token) gets a token of its own.
    values = {
        "instance_url": fake.url,
        "token_url": fake.url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": "rt-second-0000000000",
    }
    await container.credentials.update("sf", data=values)
    await run(container, node, input={"n": "3"})
    grants = [g.body.decode() for g in fake.of("token")]
    assert len(grants) == 2 and "rt-second-0000000000" in grants[1]


async def test_invalid_session_refreshes_once_and_repeats_the_call(
    container: Container, fake: FakeSalesforce
) -> None:
    await add_credential(container, fake)
    node = sf("c", "create", object="Lead", fields={"LastName": "{{ input.n }}", "Company": "A"})
    await run(container, node, input={"n": "1"})
    fake.expire_tokens()
    detail = await run(container, node, input={"n": "2"})
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert fake.calls["token"] == 2 and fake.calls["create"] == 1 + 2
    first, second = fake.of("create")[1:]
    assert first.headers["Authorization"] != second.headers["Authorization"]
    # Refused again with the new token: one refresh only, then a permanent error.
    fake.fail(401, SESSION_EXPIRED, times=2, match="create")
    detail = await run(container, node, input={"n": "3"})
    found = error(detail, "c")
    assert (found["type"], found["transient"]) == ("salesforce.invalid_session_id", False)
    assert fake.calls["token"] == 3 and fake.calls["create"] == 3 + 2


# -- origins, credential types and config ------------------------------------------------


async def test_origins_the_credential_does_not_admit_get_nothing(
    container: Container, fake: FakeSalesforce
) -> None:
    port = fake.url.rsplit(":", 1)[1]
    other = f"http://localhost:{port}"  # the same server under another origin
    await add_credential(
        container, fake, "token-elsewhere", token_url=other, allowed_origins=[fake.url]
    )
    await add_credential(
        container, fake, "instance-elsewhere", token_url=other, allowed_origins=[other]
    )
    for name in ("token-elsewhere", "instance-elsewhere"):
        detail = await run(
            container, sf("c", "create", credential=name, object="Lead", fields=LEAD)
        )
        found = error(detail, "c")
        assert found["type"] == "credential.origin_not_allowed", (name, found)
    assert fake.seen == []


async def test_the_token_instance_url_is_used_only_when_admitted(
    container: Container, fake: FakeSalesforce
) -> None:
    port = fake.url.rsplit(":", 1)[1]
    other = f"http://localhost:{port}"
    await add_credential(container, fake, "narrow")
    await add_credential(container, fake, "wide", allowed_origins=[fake.url, other])
    fake.token_instance_url = other
    for name in ("narrow", "wide"):
        node = sf(
            "c",
            "create",
            credential=name,
            object="Lead",
            fields={"LastName": "{{ input.n }}", "Company": "A"},
        )
        for n in range(2):
            detail = await run(container, node, input={"n": f"{name}{n}"})
            assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    hosts = [s.headers["Host"] for s in fake.of("create")]
    # narrow: the configured instance both times; wide: the token's instance once known.
    assert hosts == [
        f"127.0.0.1:{port}",
        f"127.0.0.1:{port}",
        f"127.0.0.1:{port}",
        f"localhost:{port}",
    ]


async def test_another_credential_type_is_refused(
    container: Container, fake: FakeSalesforce
) -> None:
    await container.credentials.create(
        "tok", CredentialType.BEARER, {"token": "tok-0123456789"}, allowed_origins=[fake.url]
    )
    found = error(
        await run(container, sf("c", "create", credential="tok", object="Lead", fields=LEAD)), "c"
    )
    assert found["type"] == "credential.type"
    assert fake.seen == []


# -- secrets -----------------------------------------------------------------------------


async def test_secrets_are_nowhere_in_outputs_errors_events_logs_or_the_database(
    container: Container, fake: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_credential(container, fake)
    await add_credential(container, fake, "jwt", flow="jwt_bearer")
    details = [
        await run(
            container,
            sf("c", "create", object="Lead", fields=LEAD),
        ),
        await run(
            container,
            sf("c", "create", credential="jwt", object="Lead", fields={**LEAD, "Email": "j@x"}),
        ),
    ]
    tokens = dict(zip(("sf", "jwt"), fake.issued, strict=True))
    # Salesforce echoing the step's token, the client secret and the refresh token.
    for name, token in tokens.items():
        echoed = f"{token} {CLIENT_SECRET} {REFRESH_TOKEN}" if name == "sf" else token
        fake.fail(
            400,
            [{"message": f"rejected {echoed}", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION"}],
            match="create",
        )
        detail = await run(
            container,
            sf(
                "c", "create", credential=name, object="Lead", fields={**LEAD, "Email": f"{name}@y"}
            ),
        )
        assert error(detail, "c")["details"]["message"].startswith("rejected ***")
        details.append(detail)
    pem_lines = [line for line in PRIVATE_PEM.splitlines() if "-----" not in line]
    secrets = [*tokens.values(), CLIENT_SECRET, REFRESH_TOKEN, *pem_lines[:3]]
    text = json.dumps(
        [
            [
                d.run.output,
                d.run.error,
                [(s.output, s.error) for s in d.steps],
                [e.data for e in d.events],
            ]
            for d in details
        ],
        default=str,
    )
    dump = await dump_database(container.settings.db_url)
    for secret in secrets:
        assert secret not in text
        assert secret not in dump
        assert secret not in caplog.text


# -- the authenticator on its own (its token cache under concurrency and expiry) ----------


def resolved(fake: FakeSalesforce) -> ResolvedCredential:
    data = parse_data(
        CredentialType.SALESFORCE_OAUTH,
        {
            "instance_url": fake.url,
            "token_url": fake.url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
        },
    )
    origins = provider_origins(CredentialType.SALESFORCE_OAUTH, data) or []
    return ResolvedCredential.of("sf", CredentialType.SALESFORCE_OAUTH, data, tuple(origins))


async def test_concurrent_steps_wait_for_one_token_request(fake: FakeSalesforce) -> None:
    auth, credential, remembered = SalesforceAuth(), resolved(fake), set[str]()
    async with httpx.AsyncClient() as client:
        ctx = AuthContext(Outbound(client), remembered.add)
        sessions = await asyncio.gather(*(auth.session(credential, ctx) for _ in range(20)))
    assert fake.calls["token"] == 1
    assert {s.token for s in sessions} == set(fake.issued)
    assert set(fake.issued) <= remembered and CLIENT_SECRET in remembered


async def test_invalidate_drops_only_the_token_that_was_refused(fake: FakeSalesforce) -> None:
    auth, credential = SalesforceAuth(), resolved(fake)
    async with httpx.AsyncClient() as client:
        ctx = AuthContext(Outbound(client), lambda _: None)
        first = await auth.session(credential, ctx)
        # A step refused with an older token leaves the current one alone.
        assert auth.invalidate("sf", "Bearer an-older-token") is False
        assert (await auth.session(credential, ctx)).token == first.token
        assert auth.invalidate("sf", f"Bearer {first.token}") is True
        second = await auth.session(credential, ctx)
    assert second.token != first.token and fake.calls["token"] == 2


async def test_a_token_said_to_expire_is_renewed_before_it_does(fake: FakeSalesforce) -> None:
    now = [1000.0]
    auth, credential = SalesforceAuth(monotonic=lambda: now[0]), resolved(fake)
    fake.token_expires_in = 3600
    async with httpx.AsyncClient() as client:
        ctx = AuthContext(Outbound(client), lambda _: None)
        first = await auth.session(credential, ctx)
        now[0] += 3600 - 31
        assert (await auth.session(credential, ctx)).token == first.token
        now[0] += 2  # within the 30 s margin
        assert (await auth.session(credential, ctx)).token != first.token
    assert fake.calls["token"] == 2
