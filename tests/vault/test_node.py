"""The http node with a credential source but no worker: headers per type, refusals, and
the executor-free failure when there is no source."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from flowyard.domain.credentials import CredentialType, ResolvedCredential
from flowyard.domain.errors import PermanentError
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.base import CredentialSource, StepContext
from flowyard.nodes.registry import default_registry
from flowyard.outbound import AuthContext, Outbound, check_origin
from support.http import RecordingServer, Reply

REGISTRY = default_registry(load_plugins=False)


class Source:
    """A fixed set of credentials, each allowed for ``origins``."""

    def __init__(
        self, origins: tuple[str, ...] = (), **creds: tuple[CredentialType, dict[str, Any]]
    ) -> None:
        self.origins = origins
        self.creds = creds

    async def get(self, name: str) -> ResolvedCredential:
        if name not in self.creds:
            raise PermanentError(f"no credential named {name!r}", error_type="credential.not_found")
        type_, data = self.creds[name]
        return ResolvedCredential.of(name, type_, data, self.origins)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def ctx(client: httpx.AsyncClient, source: CredentialSource | None) -> StepContext:
    return StepContext(
        run_id="run_1",
        workflow_id="wf_1",
        workflow_version=1,
        node_id="n",
        step_id=1,
        attempt=1,
        iteration=0,
        idempotency_key="run_1:n:0",
        scope={"input": {}, "vars": {}, "steps": {}, "run": {}},
        expressions=ExpressionEngine(),
        http=client,
        credentials=source,
    )


async def call(
    client: httpx.AsyncClient, source: CredentialSource | None, url: str, credential: str
) -> None:
    node = REGISTRY.get("http")
    assert node is not None
    config = node.parse_config({"url": url, "credential": credential})
    assert node.credential_refs(config) == [("/config/credential", credential)]
    await node.execute(ctx(client, source), config)


async def test_headers_per_type(client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    source = Source(
        (http_server.url,),
        b=(CredentialType.BEARER, {"token": "t0k"}),
        u=(CredentialType.BASIC, {"username": "a", "password": "b"}),
        k=(CredentialType.API_KEY_HEADER, {"header": "X-Token", "value": "v4l"}),
        tw=(CredentialType.TWILIO, {"account_sid": "AC1", "auth_token": "x"}),
    )
    url = f"{http_server.url}/h"
    await call(client, source, url, "b")
    await call(client, source, url, "u")
    await call(client, source, url, "k")
    got = [r.headers for r in http_server.to("/h")]
    assert got[0]["Authorization"] == "Bearer t0k"
    assert got[1]["Authorization"] == "Basic YTpi"  # base64("a:b")
    assert got[2]["X-Token"] == "v4l"

    with pytest.raises(PermanentError) as wrong:
        await call(client, source, url, "tw")
    assert wrong.value.error_type == "credential.type"
    with pytest.raises(PermanentError) as missing:
        await call(client, source, url, "nope")
    assert missing.value.error_type == "credential.not_found"
    with pytest.raises(PermanentError) as no_source:
        await call(client, None, url, "b")
    assert no_source.value.error_type == "credential.unavailable"
    assert len(http_server.to("/h")) == 3


def test_nodes_without_credentials_reference_none() -> None:
    node = REGISTRY.get("http")
    assert node is not None
    assert node.credential_refs(node.parse_config({"url": "http://x"})) == []
    other = REGISTRY.get("set")
    assert other is not None
    assert other.credential_refs(other.parse_config({"values": {"a": 1}})) == []


class RefreshTokenAuth:
    """What a provider integration registers: an OAuth refresh-token exchange done inside the
    outbound layer (its token URL checked against the credential's origins like any hop)."""

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        return frozenset({"authorization"})

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> dict[str, str]:
        token_url = httpx.URL(str(credential.values["token_url"]))
        check_origin(credential, token_url)
        request = ctx.outbound.build_request(
            "POST",
            token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": credential.values["refresh_token"],
            },
        )
        response = await ctx.outbound.send(request)
        access = str(json.loads(await response.aread())["access_token"])
        await response.aclose()
        ctx.remember(access)
        return {"Authorization": f"Bearer {access}"}


async def test_integrations_authenticate_inside_the_outbound_layer(
    client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.on("/token", lambda _: Reply(200, {"access_token": "acc-123456789"}))
    data = {
        "instance_url": "https://acme.my.salesforce.com",
        "client_id": "c",
        "client_secret": "cs",
        "refresh_token": "rt-987654321",
        "token_url": f"{http_server.url}/token",
    }
    outbound = Outbound(client)
    outbound.authenticators.register(CredentialType.SALESFORCE_OAUTH, RefreshTokenAuth())
    remembered: list[str] = []
    step = ctx(client, Source((http_server.url,), sf=(CredentialType.SALESFORCE_OAUTH, data)))
    step.outbound, step.remember_secret = outbound, remembered.append
    request = client.build_request("GET", f"{http_server.url}/api")
    response = await step.send(request, credential="sf")
    await response.aclose()
    [token_call] = http_server.to("/token")
    assert b"refresh_token=rt-987654321" in token_call.body
    assert http_server.to("/api")[0].headers["Authorization"] == "Bearer acc-123456789"
    assert remembered == ["acc-123456789"]
    assert await step.credential_info("sf") == {
        k: v for k, v in data.items() if k not in ("client_secret", "refresh_token")
    }
