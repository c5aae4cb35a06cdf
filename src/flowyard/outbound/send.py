"""The send loop: one request, its redirects followed here, each hop decided on its own.

httpx follows redirects by stripping ``Authorization`` on a change of origin and nothing
else, so an ``X-API-Key`` went along to wherever a server redirected. Here every request is
sent with ``follow_redirects=False`` and each hop is rebuilt from the request *without* the
credential's headers; the credential's authenticator adds them back only when that hop's
origin is one the credential admits **and** no earlier hop left the admitted origins (a
foreign host that redirects back must not choose which request of the allowed origin carries
the secret). A hop to another origin goes out without them (it is not refused: an API
redirecting a download to a storage host is common, and such hosts refuse foreign
``Authorization`` headers anyway). The first hop is different: a request whose own URL the
credential does not admit is refused (``credential.origin_not_allowed``), since that is a
definition (or run input) pointing a credential at the wrong place; so is a credentialed hop
whose ``Host`` header names another site than its URL (a virtual host behind the same
address). User names and passwords in a redirect's ``Location`` are dropped: httpx would turn
them into a Basic header of its own. The egress policy sits in the client's transport, so it
applies to every hop as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from flowyard.domain.credentials import ResolvedCredential
from flowyard.domain.errors import PermanentError
from flowyard.outbound.auth import (
    AuthContext,
    Authenticator,
    Authenticators,
    OriginNotAllowed,
    check_origin,
)
from flowyard.outbound.origins import OriginError, admits, origin_of, same_origin

#: Redirects followed at most, per request (httpx's default too).
MAX_REDIRECTS = 20
#: Headers that never follow a redirect to another origin, credential or not.
CROSS_ORIGIN_STRIPPED = ("authorization", "proxy-authorization", "cookie")
_BODY_HEADERS = ("content-length", "transfer-encoding", "content-type")


def _ignore(_: str) -> None:
    return None


class Outbound:
    """Outbound HTTP for nodes and integrations: the shared (egress-guarded) client, the
    credential authenticators, and the redirect loop."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        authenticators: Authenticators | None = None,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        self.client = client
        self.authenticators = authenticators if authenticators is not None else Authenticators()
        self.max_redirects = max_redirects

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        """``httpx.AsyncClient.build_request`` of the shared client."""
        return self.client.build_request(method, url, **kwargs)

    async def send(
        self,
        request: httpx.Request,
        *,
        credential: ResolvedCredential | None = None,
        follow_redirects: bool = False,
        remember: Callable[[str], None] | None = None,
    ) -> httpx.Response:
        """Send ``request`` (streamed: the caller reads and closes the response), attaching
        ``credential`` to every hop its origins admit until a hop leaves them; follows up to
        ``max_redirects`` redirects when asked. ``remember`` receives secrets an
        authenticator derives."""
        authenticator: Authenticator | None = None
        if credential is not None:
            authenticator = self.authenticators.get(credential)
            check_origin(credential, request.url)
        ctx = AuthContext(self, remember if remember is not None else _ignore)
        current = request
        # Once a hop goes to an origin the credential does not admit, that origin decides
        # where the chain goes next: the credential is not attached again.
        left = False
        for _hop in range(self.max_redirects + 1):
            attach = (
                credential is not None
                and not left
                and admits(credential.allowed_origins, current.url)
            )
            left = left or not attach
            outgoing = await self._authorize(current, credential, authenticator, ctx, attach)
            response = await self.client.send(outgoing, stream=True, follow_redirects=False)
            if not follow_redirects or not response.has_redirect_location:
                return response
            try:
                current = redirect_request(current, response)
            finally:
                await response.aclose()
        raise PermanentError(
            f"more than {self.max_redirects} redirects", error_type="http.too_many_redirects"
        )

    async def _authorize(
        self,
        request: httpx.Request,
        credential: ResolvedCredential | None,
        authenticator: Authenticator | None,
        ctx: AuthContext,
        attach: bool,
    ) -> httpx.Request:
        """The hop as it goes out: without the credential's headers, and with them when
        ``attach``."""
        if credential is None or authenticator is None:
            return request
        headers = httpx.Headers(request.headers)
        for name in authenticator.header_names(credential):
            headers.pop(name, None)
        if attach:
            _check_host(credential, request)
            headers.update(await authenticator.headers(credential, request.url, ctx))
        return httpx.Request(
            request.method,
            request.url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )


def _check_host(credential: ResolvedCredential, request: httpx.Request) -> None:
    """Refuse a ``Host`` header naming another site than the URL: the server behind an
    allowed address would route the credential to that virtual host.

    Refused rather than replaced by the URL's: a caller who set it meant another site, and
    sending the request (a POST, say) to the URL's own site instead would do something
    nobody asked for; a Host equal to the URL's (in any spelling) is sent as written."""
    host = request.headers.get("host")
    if host is None:
        return
    try:
        same = origin_of(request.url.copy_with(netloc=host.encode("ascii"))) == origin_of(
            request.url
        )
    except (httpx.InvalidURL, OriginError, UnicodeError, ValueError):
        same = False
    if not same:
        raise OriginNotAllowed(credential, request.url, host_header=host)


def redirect_request(request: httpx.Request, response: httpx.Response) -> httpx.Request:
    """The next hop after a redirect ``response`` to ``request`` (method and body rules of
    RFC 9110 and the browsers, as httpx applies them; ``Authorization``,
    ``Proxy-Authorization`` and ``Cookie`` dropped on a change of origin; a user name and
    password in the location dropped)."""
    location = response.headers.get("location", "")
    try:
        url = request.url.join(location)
    except httpx.InvalidURL as exc:
        raise PermanentError(
            f"invalid redirect location: {exc}", error_type="http.invalid_redirect"
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise PermanentError(
            f"redirect to a non-HTTP location ({url.scheme or 'no'} scheme)",
            error_type="http.invalid_redirect",
        )
    if url.userinfo:
        # httpx would send them as a Basic header, over the credential's or on its own.
        url = url.copy_with(username=None, password=None)
    if request.url.fragment and not url.fragment:
        url = url.copy_with(fragment=request.url.fragment)
    method = request.method
    status = response.status_code
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        method = "GET"
    headers = httpx.Headers(request.headers)
    headers["Host"] = url.netloc.decode("ascii")
    if not same_origin(url, request.url):
        for name in CROSS_ORIGIN_STRIPPED:
            headers.pop(name, None)
    if method != request.method and method == "GET":
        for name in _BODY_HEADERS:
            headers.pop(name, None)
        return httpx.Request(method, url, headers=headers, extensions=request.extensions)
    # (Given a stream, httpx keeps the headers as they are: Host is set above.)
    return httpx.Request(
        method, url, headers=headers, stream=request.stream, extensions=request.extensions
    )
