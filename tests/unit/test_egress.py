"""The egress policy (SSRF): what deny_private refuses after DNS resolution, on every redirect
hop; the operator's allow-list; identical refusals whatever the port's state; proxies from
the environment and cookies of other runs ignored; the container's client carries it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowyard.bootstrap import build
from flowyard.domain.egress import AllowRule
from flowyard.domain.errors import PermanentError
from flowyard.domain.statuses import RunStatus
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.base import StepContext
from flowyard.nodes.registry import default_registry
from flowyard.outbound import (
    EgressDenied,
    EgressPolicy,
    EgressPolicyKind,
    allowed_addresses,
    guarded_client,
    policy_of,
)
from flowyard.outbound.egress import EgressConfigError, is_public
from flowyard.settings import Settings
from support.http import RecordingServer, Reply
from support.runs import run_definition

REGISTRY = default_registry(load_plugins=False)
DENY = EgressPolicyKind.DENY_PRIVATE


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    s = RecordingServer().start()
    try:
        yield s
    finally:
        s.stop()


def port_of(server: RecordingServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def call(client: httpx.AsyncClient, url: str, **config: Any) -> dict[str, Any]:
    """Execute an http node against ``url`` with ``client``; the output."""
    node = REGISTRY.get("http")
    assert node is not None
    ctx = StepContext(
        run_id="run_1",
        workflow_id="wf_1",
        workflow_version=1,
        node_id="n",
        step_id=1,
        attempt=1,
        iteration=0,
        idempotency_key="k",
        scope={"input": {}, "vars": {}, "steps": {}, "run": {}},
        expressions=ExpressionEngine(),
        http=client,
    )
    outcome = await node.execute(ctx, node.parse_config({"url": url, **config}))
    output: dict[str, Any] = outcome.output
    return output


@pytest.fixture
async def denying() -> AsyncIterator[httpx.AsyncClient]:
    """A client with the default policy and an empty allow-list."""
    async with guarded_client(EgressPolicy(DENY)) as client:
        yield client


async def denied(client: httpx.AsyncClient, url: str, **config: Any) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        await call(client, url, **config)
    assert info.value.error_type == "egress.denied", info.value
    assert isinstance(info.value, EgressDenied)
    return info.value


async def test_default_policy_refuses_internal_targets(
    denying: httpx.AsyncClient, server: RecordingServer
) -> None:
    port = port_of(server)
    for url in (
        f"http://127.0.0.1:{port}/a",
        f"http://localhost:{port}/a",  # a name resolving to loopback
        f"http://2130706433:{port}/a",  # 127.0.0.1 as one decimal number
        f"http://0x7f000001:{port}/a",  # ... in hex
        f"http://127.1:{port}/a",  # ... shortened
        f"http://[::ffff:127.0.0.1]:{port}/a",  # IPv4-mapped IPv6
        f"http://[::1]:{port}/a",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
    ):
        error = await denied(denying, url)
        assert "FLOWYARD_EGRESS_ALLOW" in error.message
    assert server.requests == []


async def test_open_and_closed_ports_fail_alike(
    denying: httpx.AsyncClient, server: RecordingServer
) -> None:
    open_error = await denied(denying, f"http://127.0.0.1:{port_of(server)}/")
    closed_error = await denied(denying, f"http://127.0.0.1:{closed_port()}/")
    assert open_error.info() == closed_error.info()
    assert server.requests == []


async def test_a_redirect_to_loopback_is_refused(server: RecordingServer) -> None:
    """The first hop is allowed (by host:port), the redirect target is not."""
    target = RecordingServer().start()
    try:
        server.on("/go", lambda _: Reply(302, {}, {"Location": f"{target.url}/in"}))
        policy = EgressPolicy(DENY, [f"localhost:{port_of(server)}"])
        async with guarded_client(policy) as client:
            start = f"http://localhost:{port_of(server)}/go"
            await denied(client, start, follow_redirects=True)
            assert len(server.to("/go")) == 1 and target.requests == []
            # httpx's own redirect following goes through the same transport.
            with pytest.raises(EgressDenied):
                await client.get(start, follow_redirects=True)
    finally:
        target.stop()


async def test_the_allow_list_admits_what_it_names(server: RecordingServer) -> None:
    port = port_of(server)
    cases = {
        "127.0.0.1": [f"http://127.0.0.1:{port}/", f"http://2130706433:{port}/"],
        "127.0.0.0/8": [f"http://127.0.0.1:{port}/", f"http://[::ffff:127.0.0.1]:{port}/"],
        f"127.0.0.1:{port}": [f"http://127.0.0.1:{port}/"],
        "localhost": [f"http://localhost:{port}/"],
    }
    for entry, urls in cases.items():
        async with guarded_client(EgressPolicy(DENY, [entry])) as client:
            for url in urls:
                assert (await call(client, url))["status"] == 200, (entry, url)
    async with guarded_client(EgressPolicy(DENY, [f"127.0.0.1:{port + 1}"])) as client:
        await denied(client, f"http://127.0.0.1:{port}/")  # another port
    async with guarded_client(EgressPolicy(DENY, ["localhost"])) as client:
        await denied(client, f"http://127.0.0.1:{port}/")  # the name, not the address
    async with guarded_client(EgressPolicy(EgressPolicyKind.ALLOW_ALL)) as client:
        assert (await call(client, f"http://127.0.0.1:{port}/"))["status"] == 200


async def test_network_errors_of_allowed_hosts_stay_transient() -> None:
    async with guarded_client(EgressPolicy(DENY, ["127.0.0.1"])) as client:
        with pytest.raises(Exception) as info:
            await call(client, f"http://127.0.0.1:{closed_port()}/")
    assert getattr(info.value, "error_type", None) == "http.network"
    assert getattr(info.value, "transient", None) is True


def test_address_classification() -> None:
    for text in (
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1", "::1", "::",
        "fe80::1", "fc00::1", "fd12::1", "ff02::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
        "64:ff9b::7f00:1", "2002:7f00:1::", "2001:db8::1",
        # IPv4-translated (RFC 2765), documentation (RFC 9637), SRv6 SIDs (RFC 9602), the
        # dummy prefix (RFC 9780), and anything outside global unicast 2000::/3.
        "::ffff:0:7f00:1", "::ffff:0:808:808", "3fff::1", "3fff:fff::1", "5f00::1",
        "100:0:0:1::1", "4000::1", "::808:808",
    ):  # fmt: skip
        assert not is_public(ipaddress.ip_address(text)), text
    for text in (
        "93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
        "2a00:1450:4001:80b::200e", "3fff:1000::1",
    ):  # fmt: skip
        assert is_public(ipaddress.ip_address(text)), text


def test_a_metadata_address_stays_denied_behind_an_allowed_name() -> None:
    """The operator trusts a name; DNS (theirs or an attacker's) points it at the cloud
    metadata service: refused, unless the operator allowed that address itself."""
    ip = ipaddress.ip_address
    policy = EgressPolicy(DENY, ["crm.internal", "10.0.0.0/8"])
    assert policy.admits("crm.internal", 443, [ip("10.1.2.3"), ip("192.168.1.5")])
    assert not policy.admits("other.internal", 443, [ip("192.168.1.5")])
    for metadata in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "169.254.170.2"):
        assert not policy.admits("crm.internal", 80, [ip(metadata)]), metadata
        assert not policy.admits("crm.internal", 80, [ip("10.1.2.3"), ip(metadata)]), metadata
    assert not policy.admits("crm.internal", 80, [])
    trusted = EgressPolicy(DENY, ["crm.internal", "169.254.169.254"])
    assert trusted.admits("crm.internal", 80, [ip("169.254.169.254")])
    assert trusted.admits("anything", 80, [ip("169.254.169.254")])
    assert EgressPolicy(EgressPolicyKind.ALLOW_ALL).admits("x", 80, [ip("169.254.169.254")])


def test_allow_entries_parse_or_fail_clearly() -> None:
    assert AllowRule.parse("Example.COM").host == "example.com"
    assert AllowRule.parse("example.com:8443").port == 8443
    assert AllowRule.parse("[::1]:9000") == AllowRule(
        network=ipaddress.ip_network("::1"), port=9000
    )
    assert AllowRule.parse("10.0.0.0/8").network == ipaddress.ip_network("10.0.0.0/8")
    for bad in ("", "a b", "x:99999", "*.example.com", "10.0.0.0/33", "[::1]x"):
        with pytest.raises(ValueError):
            AllowRule.parse(bad)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWYARD_EGRESS_ALLOW", "10.0.0.0/8, api.internal:8443")
    monkeypatch.setenv("FLOWYARD_EGRESS_POLICY", "allow_all")
    settings = Settings()
    assert settings.egress_allow == ["10.0.0.0/8", "api.internal:8443"]
    assert EgressPolicy.from_settings(settings).kind is EgressPolicyKind.ALLOW_ALL
    monkeypatch.setenv("FLOWYARD_EGRESS_ALLOW", '["::1", "localhost"]')
    monkeypatch.delenv("FLOWYARD_EGRESS_POLICY")
    settings = Settings()
    assert settings.egress_allow == ["::1", "localhost"]
    assert EgressPolicy.from_settings(settings).kind is EgressPolicyKind.DENY_PRIVATE
    with pytest.raises(EgressConfigError, match="FLOWYARD_EGRESS_ALLOW"):
        EgressPolicy.from_settings(Settings(egress_allow=["not a host"]))


async def test_proxy_variables_and_cookies_are_ignored(
    server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = RecordingServer().start()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        server.on("/login", lambda _: Reply(200, {}, {"Set-Cookie": "session=abc; Path=/"}))
        async with guarded_client(EgressPolicy(DENY, ["127.0.0.1"])) as client:
            await call(client, f"{server.url}/login")
            await call(client, f"{server.url}/next")
        assert proxy.requests == []
        [after] = server.to("/next")
        assert "Cookie" not in after.headers  # one run's cookies never reach another's call
    finally:
        proxy.stop()


async def test_the_container_client_applies_the_settings(
    tmp_path: Path, server: RecordingServer
) -> None:
    definition = {
        "name": "ssrf",
        "start": "call",
        "nodes": [
            {
                "id": "call",
                "type": "http",
                "config": {"url": f"{server.url}/x"},
                "retry": {"max_attempts": 3, "initial_interval_s": 0.01},
            }
        ],
    }

    def settings(**extra: Any) -> Settings:
        return Settings(
            db_url=f"sqlite:///{tmp_path / 'e.db'}",
            workers=0,
            poll_interval_s=0.05,
            load_plugins=False,
            **extra,
        )

    container = await build(settings(egress_allow=[]))
    try:
        detail = await run_definition(container, definition)
    finally:
        await container.close()
    assert detail.run.status is RunStatus.FAILED
    assert [s.error["type"] if s.error else None for s in detail.steps] == ["egress.denied"]
    assert detail.steps[0].error is not None and detail.steps[0].error["transient"] is False
    assert server.requests == []

    container = await build(settings(egress_allow=["127.0.0.1"]))
    try:
        detail = await run_definition(container, definition)
    finally:
        await container.close()
    assert detail.run.status is RunStatus.SUCCEEDED
    assert len(server.requests) == 1


async def test_redirect_loops_are_bounded(server: RecordingServer) -> None:
    server.on("/loop", lambda _: Reply(302, {}, {"Location": "/loop"}))
    server.on("/ftp", lambda _: Reply(302, {}, {"Location": "ftp://files.example.com/x"}))
    async with guarded_client(EgressPolicy(DENY, ["127.0.0.1"])) as client:
        with pytest.raises(PermanentError) as loop:
            await call(client, f"{server.url}/loop", follow_redirects=True)
        assert loop.value.error_type == "http.too_many_redirects"
        assert len(server.to("/loop")) == 21
        with pytest.raises(PermanentError) as scheme:
            await call(client, f"{server.url}/ftp", follow_redirects=True)
        assert scheme.value.error_type == "http.invalid_redirect"
        # Without follow_redirects the redirect is the answer (a 3xx fails the step).
        with pytest.raises(PermanentError) as plain:
            await call(client, f"{server.url}/loop")
        assert plain.value.error_type == "http.302"


async def test_connections_beside_http_are_checked_alike() -> None:
    """allowed_addresses: what an SMTP connection may use, resolved and checked like an HTTP
    connect (a name resolving to loopback too); unguarded clients get the default policy."""
    policy = EgressPolicy(DENY)
    for host in ("127.0.0.1", "localhost", "2130706433", "169.254.169.254", "::1"):
        with pytest.raises(EgressDenied):
            await allowed_addresses(policy, host, 25)
    allowing = EgressPolicy(DENY, ["127.0.0.1:2525"])
    assert await allowed_addresses(allowing, "127.0.0.1", 2525) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    with pytest.raises(EgressDenied):
        await allowed_addresses(allowing, "127.0.0.1", 25)
    open_policy = EgressPolicy(EgressPolicyKind.ALLOW_ALL)
    assert await allowed_addresses(open_policy, "127.0.0.1", 25) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    async with guarded_client(allowing) as client:
        assert policy_of(client) is allowing
    async with httpx.AsyncClient() as plain:
        assert policy_of(plain).checks and policy_of(plain).rules == ()
