"""Client addresses as the login throttle counts them: one spelling per address, and one
group per IPv6 network a single party usually holds.

Why canonical: the same client can reach us as ``203.0.113.5`` or ``::ffff:203.0.113.5``
(a dual-stack listener), as ``2001:DB8::1`` or ``2001:db8:0:0::1``, or with a zone
(``fe80::1%eth0``); counted as typed, each spelling would be a fresh throttle key.

Why IPv6 groups: an ordinary subscriber, or any cloud instance, is handed a whole /64 (2**64
addresses), so counting per IPv6 address would give one attacker unlimited fresh keys. IPv6
clients are counted per network of ``ipv6_prefix`` bits (``FLOWYARD_CLIENT_IPV6_PREFIX``,
64 by default); IPv4 clients per address.
"""

from __future__ import annotations

import ipaddress

#: The IPv6 network length counted as one client unless configured otherwise.
DEFAULT_IPV6_PREFIX = 64


def _strip_port(text: str) -> str:
    """``[v6]``, ``[v6]:port`` -> ``v6``; ``v4:port`` -> ``v4`` (what proxies sometimes
    forward); anything else unchanged."""
    if text.startswith("["):
        inside, sep, _ = text[1:].partition("]")
        return inside if sep else text
    host, sep, port = text.rpartition(":")
    if sep and host.count(".") == 3 and ":" not in host and port.isdigit():
        return host
    return text


def canonical_address(address: str) -> str:
    """One spelling per address: an IPv4-mapped IPv6 address is its IPv4 address, IPv6 is
    compressed and lower case, a zone (``%eth0``), brackets and a port are dropped. A string
    that is no IP address (``unknown``, a test client's name) is only trimmed and lowered."""
    text = address.strip()
    bare = _strip_port(text).partition("%")[0]
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return text.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def client_group(address: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The client as the throttle counts it: the canonical IPv4 address, or the IPv6
    network of ``ipv6_prefix`` bits holding the address (``2001:db8:1:2::/64``; at 128 the
    address itself)."""
    if not 1 <= ipv6_prefix <= 128:
        raise ValueError(f"an IPv6 prefix length is 1 to 128, not {ipv6_prefix}")
    canonical = canonical_address(address)
    try:
        ip = ipaddress.ip_address(canonical)
    except ValueError:
        return canonical
    if isinstance(ip, ipaddress.IPv4Address) or ipv6_prefix == 128:
        return canonical
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
