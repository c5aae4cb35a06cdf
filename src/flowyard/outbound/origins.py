"""Origins: where a credential may be sent.

An origin is ``scheme://host[:port]`` (RFC 6454), written in one normal form so that two
spellings of the same place compare equal: lower-case scheme and host, the host in its
IDNA (``xn--``) form, an IPv6 host in brackets, the scheme's default port left out. A pattern
may start its host with ``*.`` to admit every subdomain (at any depth, not the domain
itself): ``https://*.my.salesforce.com`` admits ``https://acme.my.salesforce.com`` and
``https://acme--dev.sandbox.my.salesforce.com``; a wildcard never admits an IP address, and
its last label may not be numeric (``*.0.0.1`` would otherwise end in an address). Numeric
hosts are compared as written: ``http://2130706433`` is not ``http://127.0.0.1`` (a credential
naming one is never sent to the other).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from flowyard.domain.credentials import CredentialType
from flowyard.domain.errors import Problem

#: Schemes an origin may name; ``smtp`` is for SMTP credentials (their port is always kept).
SCHEMES = frozenset({"http", "https", "smtp"})
DEFAULT_PORTS = {"http": 80, "https": 443}
#: At most this many origins per credential; each at most this long.
MAX_ORIGINS = 50
MAX_ORIGIN_CHARS = 300

_FORM = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)/?$")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
#: A last label URL parsers read as (part of) an IPv4 address: decimal, or 0x-hex.
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")

_log = logging.getLogger("flowyard.outbound")


class OriginError(ValueError):
    """Text that is not an origin (the message says what is wrong, never echoing secrets:
    origins are not secret)."""


class OriginListError(OriginError):
    """A list of origins with problems: each located relative to the list (``""`` for the
    list itself, ``/<index>`` for an entry)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.pointer or '/'}: {p.message}" for p in self.problems))


@dataclass(frozen=True, slots=True)
class Origin:
    """A normalised origin, or an origin pattern when ``wildcard`` (``*.`` + ``host``)."""

    scheme: str
    host: str
    port: int
    wildcard: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.wildcard:
            host = "*." + host
        default = DEFAULT_PORTS.get(self.scheme)
        return (
            f"{self.scheme}://{host}"
            if self.port == default
            else f"{self.scheme}://{host}:{self.port}"
        )

    def admits(self, other: Origin) -> bool:
        """Whether the request origin ``other`` matches this origin or pattern."""
        if other.scheme != self.scheme or other.port != self.port or other.wildcard:
            return False
        if self.wildcard:
            # An address is never a subdomain (a hand-edited ``*.0.0.1`` must not admit
            # 127.0.0.1).
            return other.host.endswith("." + self.host) and not _is_ip(other.host)
        return other.host == self.host


def origin_of(url: httpx.URL | str) -> Origin:
    """The origin of a request URL (OriginError when it has no usable one)."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise OriginError(f"invalid URL: {exc}") from None
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        raise OriginError(f"scheme {scheme or '(none)'!r} is not one of {sorted(SCHEMES)}")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise OriginError("the URL has no host")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS.get(scheme)
    if port is None:
        raise OriginError(f"a {scheme} origin needs an explicit port")
    return Origin(scheme, host, port)


def parse_origin(text: str) -> Origin:
    """Parse and normalise an allowed origin (or ``*.`` pattern) an admin wrote."""
    if not isinstance(text, str) or not text.strip():
        raise OriginError("an origin is a non-empty string like https://api.example.com")
    text = text.strip()
    if len(text) > MAX_ORIGIN_CHARS:
        raise OriginError(f"longer than {MAX_ORIGIN_CHARS} characters")
    match = _FORM.match(text)
    if match is None:
        raise OriginError(
            "write scheme://host[:port] with no path, query or fragment "
            "(e.g. https://api.example.com)"
        )
    scheme, authority = match["scheme"].lower(), match["authority"]
    if "@" in authority:
        raise OriginError("an origin has no user name or password")
    wildcard = authority.startswith("*.")
    if wildcard:
        authority = authority[2:]
    if "*" in authority:
        raise OriginError("'*' may only start the host, as a whole label: *.example.com")
    origin = origin_of(f"{scheme}://{authority}/")
    if origin.port < 1 or origin.port > 65535:
        raise OriginError(f"port {origin.port} is out of range")
    if _is_ip(origin.host):
        if wildcard:
            raise OriginError("a wildcard needs a domain name, not an IP address")
    elif not all(_LABEL.match(label) for label in origin.host.split(".")):
        raise OriginError(f"{origin.host!r} is not a valid host name")
    if wildcard and origin.host.count(".") < 1:
        raise OriginError("a wildcard needs at least two labels after it: *.example.com")
    if wildcard and _NUMERIC_LABEL.match(origin.host.rsplit(".", 1)[-1]):
        raise OriginError("a wildcard needs a domain name; its last label may not be numeric")
    return Origin(origin.scheme, origin.host, origin.port, wildcard)


def normalize_origins(values: Sequence[Any]) -> list[str]:
    """Normal forms of ``values``, duplicates dropped, order kept: at least one, at most
    :data:`MAX_ORIGINS`. Raises :class:`OriginListError` locating every problem."""
    problems: list[Problem] = []
    if not values:
        problems.append(Problem("", "give at least one origin (or omit it)", "too_short"))
    if len(values) > MAX_ORIGINS:
        problems.append(Problem("", f"at most {MAX_ORIGINS}", "too_long"))
    result: list[str] = []
    for index, value in enumerate(values[:MAX_ORIGINS]):
        try:
            normal = str(parse_origin(value))
        except OriginError as exc:
            problems.append(Problem(f"/{index}", str(exc), "origin"))
            continue
        if normal not in result:
            result.append(normal)
    if problems:
        raise OriginListError(problems)
    return result


@functools.lru_cache(maxsize=1024)
def patterns(allowed: tuple[str, ...]) -> tuple[Origin, ...]:
    """The parsed forms of a credential's ``allowed`` origins, parsed once per distinct
    list (not on every hop). An entry that does not parse (a row edited by hand) admits
    nothing; it is logged once."""
    parsed: list[Origin] = []
    for text in allowed:
        try:
            parsed.append(parse_origin(text))
        except OriginError as exc:
            _log.warning("ignoring a stored allowed origin %r: %s", text, exc)
    return tuple(parsed)


def admits(allowed: Iterable[str], url: httpx.URL | str) -> bool:
    """Whether any of the normalised ``allowed`` origins admits the origin of ``url``."""
    try:
        target = origin_of(url)
    except OriginError:
        return False
    return any(pattern.admits(target) for pattern in patterns(tuple(allowed)))


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Whether two URLs have the same origin (False when either has none)."""
    try:
        return origin_of(a) == origin_of(b)
    except OriginError:
        return False


#: The types whose origins an admin must name: they authenticate arbitrary HTTP requests.
HTTP_STYLE = frozenset(
    {
        CredentialType.BEARER,
        CredentialType.BASIC,
        CredentialType.API_KEY_HEADER,
        CredentialType.CUSTOM,
    }
)

SALESFORCE_LOGIN = "https://login.salesforce.com"
TWILIO_API = "https://api.twilio.com"


def provider_origins(type_: CredentialType, data: Mapping[str, Any]) -> list[str] | None:
    """The origins a provider credential talks to by default, from its own data: Salesforce
    its instance and token endpoints, Twilio, SendGrid, Meta Graph and Slack their API
    (``base_url``, the provider's own by default), SMTP its relay (``smtp://host:port``).
    None for the http-style types (an admin names theirs)."""
    if type_ is CredentialType.SALESFORCE_OAUTH:
        token_url = data.get("token_url") or SALESFORCE_LOGIN
        return normalize_origins(
            [str(origin_of(str(data["instance_url"]))), str(origin_of(str(token_url)))]
        )
    if type_ is CredentialType.TWILIO:
        # Rows saved before base_url existed talk to Twilio's own API.
        return normalize_origins([str(origin_of(str(data.get("base_url") or TWILIO_API)))])
    if type_ in (CredentialType.SENDGRID, CredentialType.META_GRAPH, CredentialType.SLACK):
        return normalize_origins([str(origin_of(str(data["base_url"])))])
    if type_ is CredentialType.SMTP:
        host = str(data["host"])
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return normalize_origins([f"smtp://{host}:{int(data.get('port') or 587)}"])
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
