"""The egress policy: which addresses outbound requests may connect to (SSRF defence).

``deny_private`` (the default) refuses every address that is not publicly routable:
loopback, link-local (169.254.0.0/16 with the cloud metadata services, fe80::/10), private
(10/8, 172.16/12, 192.168/16, fc00::/7), shared CGNAT (100.64/10), multicast, unspecified,
documentation, benchmark and reserved ranges, the IPv4-mapped, -compatible, NAT64 and 6to4
IPv6 forms of any of them, and IPv6 outside global unicast (2000::/3) unless it carries a
public IPv4 address. ``allow_all`` checks nothing. The operator's allow-list
(``FLOWYARD_EGRESS_ALLOW``) exempts host names, ``host:port`` pairs, addresses and networks;
a cloud metadata address stays refused behind an allowed *name* (DNS decides what a name
resolves to), unless an address entry covers it.

The check runs where the connection is made: :class:`GuardedBackend` wraps httpcore's network
backend, resolves the host itself, checks **every** address the name resolves to, and
connects to a checked address (TLS still verifies and sends SNI for the host name, which
httpcore passes separately). So a redirect to a private address, a name that resolves to
one (``localhost``, DNS rebinding between a check and a connect), or a numeric host such as
``http://2130706433/`` (which resolves to 127.0.0.1) are all refused, on every hop, for every
caller of the shared client. A refusal is raised before any packet leaves, with the same
message whatever the state of the port: error texts cannot be used to scan ports.

Connections that are not HTTP (an SMTP relay) resolve and check their host with
:func:`allowed_addresses` under the policy of the step's client (:func:`policy_of`) and
connect to a checked address themselves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore
import httpx

from flowyard.domain.egress import AllowRule, EgressPolicyKind, IPAddress, IPNetwork
from flowyard.domain.errors import FlowyardError, PermanentError
from flowyard.settings import Settings

#: Not publicly routable, or not meant to be connected to (IANA special-purpose registries).
#: Listed explicitly rather than trusting ``ipaddress.is_global`` alone, whose tables changed
#: between Python patch releases; ``is_global`` is checked as well.
DENIED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        # IPv4 special-purpose registry (IANA, checked 2025).
        "0.0.0.0/8",  # "this network", 0.0.0.0
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        # IPv6 special-purpose registry (IANA, checked 2025); IPv4-mapped, -compatible,
        # NAT64 and 6to4 are judged by the IPv4 address they carry (embedded_ipv4).
        "::/128",
        "::1/128",
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765), e.g. ::ffff:0:7f00:1
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "100:0:0:1::/64",  # dummy prefix (RFC 9780)
        "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ...)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs (RFC 9602)
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")
#: Every IPv6 unicast address IANA has allocated for the internet is in here.
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")

#: Cloud metadata and credential services (AWS IMDS and ECS/EKS task credentials, GCP, Azure,
#: OpenStack, DigitalOcean at 169.254.169.254; Alibaba; Oracle's legacy address): refused
#: even behind an allowed host name, unless an address entry of the allow-list covers them.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "100.100.100.200",
        "192.0.0.192",
    )
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a publicly routable unicast address (see :data:`DENIED_NETWORKS`)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None and not is_public(inner):
            return False
        # Outside 2000::/3 only the IPv4-mapped and NAT64 forms of a public address are
        # reachable (the deprecated IPv4-compatible form is not routed).
        if ip not in _GLOBAL_UNICAST and ip.ipv4_mapped is None and ip not in _NAT64:
            return False
    if any(ip in net for net in DENIED_NETWORKS if net.version == ip.version):
        return False
    return ip.is_global and not ip.is_multicast


def is_metadata(ip: IPAddress) -> bool:
    """Whether ``ip`` is (or carries) a cloud metadata address (:data:`METADATA_ADDRESSES`)."""
    if ip in METADATA_ADDRESSES:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return ipaddress.IPv6Address(str(ip).split("%", 1)[0]) in METADATA_ADDRESSES
        inner = embedded_ipv4(ip)
        return inner is not None and inner in METADATA_ADDRESSES
    return False


class EgressConfigError(FlowyardError):
    """The egress settings cannot be used (a bad allow-list entry)."""

    code = "egress-config"
    title = "Egress settings unusable"


class EgressDenied(PermanentError):
    """A connection the egress policy refuses (``egress.denied``, permanent)."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"egress to {host!r} is refused: it is, or resolves to, a loopback, private, "
            "link-local, multicast or reserved address (egress policy deny_private; an "
            "operator may allow it with FLOWYARD_EGRESS_ALLOW)",
            error_type="egress.denied",
            details={"host": host},
        )


class EgressPolicy:
    """Decides whether a host (and the addresses it resolves to) may be connected to."""

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        """``FLOWYARD_EGRESS_POLICY`` with ``FLOWYARD_EGRESS_ALLOW`` (EgressConfigError naming
        a bad entry)."""
        try:
            return cls(EgressPolicyKind(settings.egress_policy), settings.egress_allow)
        except ValueError as exc:
            raise EgressConfigError(f"FLOWYARD_EGRESS_ALLOW: {exc}") from None

    def __init__(
        self, kind: EgressPolicyKind = EgressPolicyKind.DENY_PRIVATE, allow: Iterable[str] = ()
    ) -> None:
        self.kind = kind
        self.rules: tuple[AllowRule, ...] = tuple(AllowRule.parse(entry) for entry in allow)

    @property
    def checks(self) -> bool:
        """False under ``allow_all``: nothing to check."""
        return self.kind is not EgressPolicyKind.ALLOW_ALL

    def admits_name(self, host: str, port: int) -> bool:
        """Whether the allow-list names ``host`` itself (then the addresses it resolves to
        are trusted, but for a metadata address: the operator vouched for the name, not for
        what DNS makes of it)."""
        host = host.lower().rstrip(".")
        return any(rule.admits_name(host, port) for rule in self.rules)

    def admits_address(self, ip: IPAddress, port: int, *, named: bool = False) -> bool:
        """Whether a connection to ``ip`` on ``port`` is allowed (``named``: the host name
        it was resolved from is on the allow-list)."""
        if any(rule.admits_address(ip, port) for rule in self.rules):
            return True
        if is_metadata(ip):
            return False
        return named or is_public(ip)

    def admits(self, host: str, port: int, addresses: Iterable[IPAddress]) -> bool:
        """Whether ``host`` may be connected to on ``port`` when it resolves to
        ``addresses``: every one of them must be allowed (none: refused)."""
        if not self.checks:
            return True
        named = self.admits_name(host, port)
        found = list(addresses)
        return bool(found) and all(self.admits_address(ip, port, named=named) for ip in found)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the egress policy applied at connect time."""

    def __init__(
        self, policy: EgressPolicy, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self.policy = policy
        self.inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, refuse it when any address is not allowed, connect to the
        checked addresses in order (a name on the allow-list too: its addresses are checked
        for metadata services, and connecting to them, not to the name, leaves DNS no second
        answer)."""
        if not self.policy.checks:
            return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = await _resolve(host, port, timeout)
        if not self.policy.admits(host, port, addresses):
            raise EgressDenied(host)
        error: Exception | None = None
        for ip in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Unix sockets are local: refused unless the policy is ``allow_all``."""
        if self.policy.checks:
            raise EgressDenied(path)
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        """Delegate."""
        await self.inner.sleep(seconds)


async def _resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
    """Every address of ``host`` (a numeric host resolves to itself, in any of the forms
    ``inet_aton`` accepts). Failures are network errors (transient), as without a policy."""
    try:
        async with asyncio.timeout(timeout):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from None
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and len(sockaddr) >= 4 and sockaddr[3]:
            ip = ipaddress.IPv6Address(f"{ip}%{sockaddr[3]}")  # keep the scope: it is denied
        if ip not in addresses:
            addresses.append(ip)
    return addresses


async def allowed_addresses(
    policy: EgressPolicy, host: str, port: int, *, timeout: float | None = None
) -> list[IPAddress]:
    """The addresses a connection that is not HTTP (an SMTP relay) may be made to for
    ``host:port``: resolved and checked exactly as :class:`GuardedBackend` does for HTTP, so
    the caller connects to one of these addresses, never to the name again (DNS gets no
    second answer). Raises :class:`EgressDenied` when any address is refused (before any
    packet leaves), ``OSError`` when the name does not resolve, ``TimeoutError`` when
    resolving takes longer than ``timeout``. Under ``allow_all`` the addresses are returned
    unchecked."""
    try:
        addresses = await _resolve(host, port, timeout)
    except httpcore.ConnectTimeout as exc:
        raise TimeoutError(str(exc)) from None
    except httpcore.ConnectError as exc:
        raise OSError(str(exc)) from None
    if not policy.admits(host, port, addresses):
        raise EgressDenied(host)
    return addresses


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose network backend is guarded.

    httpx does not take a network backend, so the pool it builds is replaced by an equal one
    built with :class:`GuardedBackend` (httpcore's public ``network_backend`` parameter);
    httpx's request and exception mapping stay as they are. The pool httpx builds first is
    an empty object (no sockets, no threads); the costly part, the TLS context with its CA
    store, is built once and shared by both. The egress tests fail loudly should a later
    httpx stop using ``_pool``."""

    def __init__(self, policy: EgressPolicy, *, limits: httpx.Limits, http2: bool = False) -> None:
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context, trust_env=False, limits=limits, http2=http2)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=GuardedBackend(policy),
        )


class GuardedClient(httpx.AsyncClient):
    """The outbound HTTP client that knows its egress policy, so connections made beside it
    (SMTP) obey the same policy (:func:`policy_of`)."""

    def __init__(self, policy: EgressPolicy, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        self.egress_policy = policy


def policy_of(client: httpx.AsyncClient) -> EgressPolicy:
    """The egress policy of ``client`` (:func:`guarded_client` builds it); the default policy
    (``deny_private``, no allow-list) for any other client: a connection made beside an
    unguarded client is not let through unchecked."""
    if isinstance(client, GuardedClient):
        return client.egress_policy
    return EgressPolicy()


def guarded_client(
    policy: EgressPolicy,
    *,
    limits: httpx.Limits | None = None,
    timeout: httpx.Timeout | float | None = 5.0,
) -> GuardedClient:
    """The one outbound client of a process: the egress policy in its transport;
    ``trust_env=False`` so ``HTTP(S)_PROXY``/``ALL_PROXY`` and ``.netrc`` are ignored (a proxy
    would connect on our behalf, out of the policy's sight; netrc would add credentials the
    vault does not know about); and a cookie jar that keeps nothing, since the client is
    shared by every run: a cookie set by one workflow's upstream must not ride along on
    another's requests."""
    limits = limits or httpx.Limits(max_connections=200, max_keepalive_connections=50)
    return GuardedClient(
        policy,
        transport=GuardedTransport(policy, limits=limits),
        trust_env=False,
        timeout=timeout,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
