"""The egress policy's vocabulary: its kinds and the entries of its allow-list."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressPolicyKind(StrEnum):
    """``FLOWYARD_EGRESS_POLICY``."""

    DENY_PRIVATE = "deny_private"
    ALLOW_ALL = "allow_all"


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One entry of ``FLOWYARD_EGRESS_ALLOW``: a host name, an address or network, each
    optionally with one port (``host:port``, ``[v6]:port``)."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowRule:
        """Parse an entry (ValueError saying what is wrong)."""
        entry = text.strip().lower()
        if not entry:
            raise ValueError("empty egress allow entry")
        port: int | None = None
        if entry.startswith("["):
            inner, _, rest = entry[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"egress allow entry {text!r}: expected [address]:port")
                port = _port(rest[1:], text)
            entry = inner
        elif entry.count(":") == 1:
            entry, _, raw_port = entry.partition(":")
            port = _port(raw_port, text)
        try:
            return cls(network=ipaddress.ip_network(entry, strict=False), port=port)
        except ValueError:
            pass
        if "/" in entry or not entry or any(c in entry for c in " @*[]"):
            raise ValueError(
                f"egress allow entry {text!r} is not a host name, host:port, address or CIDR"
            )
        return cls(host=entry.rstrip("."), port=port)

    def admits_name(self, host: str, port: int) -> bool:
        """Whether this rule names ``host`` (as written in the URL) on ``port``."""
        return self.host is not None and self.host == host and self.port in (None, port)

    def admits_address(self, ip: IPAddress, port: int) -> bool:
        """Whether this rule covers the resolved address ``ip`` on ``port``."""
        if self.network is None or self.port not in (None, port):
            return False
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if mapped is not None and self.network.version == 4:
            return mapped in self.network
        return ip.version == self.network.version and ip in self.network


def _port(raw: str, text: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ValueError(f"egress allow entry {text!r}: bad port {raw!r}")
    return int(raw)


def parse_allow_list(values: Sequence[str]) -> list[str]:
    """Check every entry of an allow-list (ValueError at the first bad one); returns the
    entries stripped."""
    entries = [v.strip() for v in values if v.strip()]
    for entry in entries:
        AllowRule.parse(entry)
    return entries
