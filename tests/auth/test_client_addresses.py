"""Client addresses as the login throttle counts them: one spelling per address, IPv6
clients grouped by network (``FLOWYARD_CLIENT_IPV6_PREFIX``)."""

from __future__ import annotations

import pytest

from flowyard.security.addresses import canonical_address, client_group


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5 ", "203.0.113.5"),
        ("203.0.113.5:51234", "203.0.113.5"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("::FFFF:CB00:7105", "203.0.113.5"),
        ("[::ffff:203.0.113.5]:443", "203.0.113.5"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:8443", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("FE80::1%25", "fe80::1"),
        ("unknown", "unknown"),
        ("TestClient", "testclient"),
    ],
)
def test_one_spelling_per_address(given: str, canonical: str) -> None:
    assert canonical_address(given) == canonical


def test_ipv6_clients_are_grouped_by_their_network() -> None:
    assert client_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_group("2001:DB8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_group("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_group("2001:db8:1:2:aaaa::1", 48) == "2001:db8:1::/48"
    assert client_group("2001:db8::1", 128) == "2001:db8::1"
    # IPv4 (mapped or not) is counted per address, whatever the IPv6 prefix.
    assert client_group("::ffff:203.0.113.5", 48) == "203.0.113.5"
    assert client_group("unknown") == "unknown"
    with pytest.raises(ValueError, match="1 to 128"):
        client_group("2001:db8::1", 0)
