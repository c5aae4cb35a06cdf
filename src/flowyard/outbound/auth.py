"""Credential application: which headers a credential adds to a request, and where.

Nodes never see a secret: they hand a credential (by name) to the outbound layer with the
request, and an :class:`Authenticator` of the credential's type adds its header(s) here, at
send time, to each hop whose origin the credential admits. Provider integrations register
their own authenticators (an OAuth token exchange happens inside ``headers``, through
:class:`AuthContext`, never in node code).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import httpx

from flowyard.domain.credentials import CredentialType, ResolvedCredential
from flowyard.domain.errors import PermanentError
from flowyard.outbound.origins import OriginError, admits, origin_of

if TYPE_CHECKING:
    from flowyard.outbound.send import Outbound


class OriginNotAllowed(PermanentError):
    """A credential was to be sent to an origin it does not name
    (``credential.origin_not_allowed``, permanent): the request's URL, or the virtual host
    its ``Host`` header names (``host_header``)."""

    def __init__(
        self, credential: ResolvedCredential, url: httpx.URL, *, host_header: str | None = None
    ) -> None:
        origin = _origin_text(url)
        details: dict[str, object] = {"credential": credential.name}
        if host_header is not None:
            try:
                origin = _origin_text(url.copy_with(netloc=host_header.encode()))
            except (httpx.InvalidURL, UnicodeError, ValueError):
                origin = host_header
            where = (
                f"with the Host header {host_header!r} (another site than the URL's "
                f"{_origin_text(url)}; a credentialed request's Host must be its URL's)"
            )
            details["host_header"] = host_header
        else:
            where = f"to {origin}"
        allowed = list(credential.allowed_origins)
        if allowed:
            message = (
                f"credential {credential.name!r} may not be sent {where}; it is allowed "
                f"for {', '.join(allowed)}"
            )
        else:
            message = (
                f"credential {credential.name!r} has no allowed origins, so it is sent nowhere; "
                "an admin must set them (PUT /api/v1/credentials/"
                f"{credential.name} with allowed_origins)"
            )
        details.update({"origin": origin, "allowed_origins": allowed})
        super().__init__(message, error_type="credential.origin_not_allowed", details=details)


def _origin_text(url: httpx.URL) -> str:
    try:
        return str(origin_of(url))
    except OriginError:
        return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def check_origin(credential: ResolvedCredential, url: httpx.URL) -> None:
    """Raise :class:`OriginNotAllowed` unless ``credential`` may be sent to ``url``'s origin.
    Integrations call it before putting a credential's values anywhere (a token request's
    body included)."""
    if not admits(credential.allowed_origins, url):
        raise OriginNotAllowed(credential, url)


@dataclass(frozen=True, slots=True)
class AuthContext:
    """What an authenticator may use besides the credential: the outbound layer (for token
    calls: egress and origins apply to them too) and ``remember``, which adds a secret it
    derived (an access token) to what the step redacts."""

    outbound: Outbound
    remember: Callable[[str], None]


class Authenticator(Protocol):
    """Adds one credential type's headers to a request."""

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        """Lower-case names of the headers it sets: they are removed from every hop first,
        so a header of the same name written in a node's config never goes out instead."""
        ...

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> Mapping[str, str]:
        """The headers for a request to ``url`` (whose origin the credential admits)."""
        ...


class BearerAuth:
    """``Authorization: Bearer <token>``."""

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        """``authorization``."""
        return frozenset({"authorization"})

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> Mapping[str, str]:
        """The bearer header."""
        return {"Authorization": f"Bearer {credential.values['token']}"}


class BasicAuth:
    """``Authorization: Basic base64(user:password)``."""

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        """``authorization``."""
        return frozenset({"authorization"})

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> Mapping[str, str]:
        """The basic header."""
        values = credential.values
        pair = f"{values['username']}:{values['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


class ApiKeyHeaderAuth:
    """The key in the credential's own header (``X-API-Key`` by default)."""

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        """The credential's header."""
        return frozenset({str(credential.values["header"]).lower()})

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> Mapping[str, str]:
        """The key header."""
        return {str(credential.values["header"]): str(credential.values["value"])}


class Authenticators:
    """Authenticators by credential type (bearer, basic and api_key_header built in)."""

    def __init__(self) -> None:
        self._by_type: dict[CredentialType, Authenticator] = {
            CredentialType.BEARER: BearerAuth(),
            CredentialType.BASIC: BasicAuth(),
            CredentialType.API_KEY_HEADER: ApiKeyHeaderAuth(),
        }

    def register(self, type_: CredentialType, authenticator: Authenticator) -> None:
        """Use ``authenticator`` for credentials of ``type_`` (replaces a previous one)."""
        self._by_type[type_] = authenticator

    def get(self, credential: ResolvedCredential) -> Authenticator:
        """The authenticator of the credential's type (``credential.type`` error when it
        cannot authenticate an HTTP request)."""
        found = self._by_type.get(credential.type)
        if found is None:
            usable = ", ".join(sorted(t.value for t in self._by_type))
            raise PermanentError(
                f"credential {credential.name!r} is of type {credential.type.value}, which "
                f"cannot authenticate an HTTP request here (usable types: {usable})",
                error_type="credential.type",
                details={"credential": credential.name, "type": credential.type.value},
            )
        return found
