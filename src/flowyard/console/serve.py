"""Serve the console's built files: ``/`` and every deep link answer ``index.html`` (the
app routes in the browser), ``/assets/<name>`` the hashed bundles.

- Caching: the bundles' names carry a hash of their content, so they are cached for a year
  as ``immutable``; ``index.html`` (which names the current bundles) is revalidated on every
  load (``no-cache`` with an ETag), so a new release is picked up by the next page load.
- Security: a Content-Security-Policy allows scripts, styles, images and fonts from this
  origin only, requests (fetch, WebSocket) to this origin only, no inline script, no frames,
  nothing from a CDN. The files are public like ``/docs``: the data comes from the API,
  which checks every request's token and role.
- An unknown asset is a 404, never ``index.html``: a stale bundle name must fail loudly, not
  run HTML as a script. Only the console's own sections are deep links: the API's paths and
  the operations endpoints, and any unknown path, keep their own answers (problem+json 404).

The module needs only Starlette: the console knows the API through HTTP, like any client.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

#: Where ``make ui`` writes the build (committed: ``flowyard serve`` needs no Node).
STATIC_DIR = Path(__file__).parent / "static"
#: The first path segments of the console's pages (console/src/main.jsx routes them): a
#: path under one of them answers index.html; any other path is the server's (the API, docs,
#: probes, metrics) and keeps its own answer, an unknown one its problem+json 404.
SECTIONS = frozenset({"workflows", "runs", "campaigns", "admin"})
#: The policy of every console response.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        # 'self' covers ws:/wss: to this host and port (CSP level 3; Chromium, Firefox).
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
#: Types by suffix: a guessed type (``mimetypes`` reads the system's tables) could be wrong,
#: and ``nosniff`` makes a browser refuse a script served as ``text/plain``.
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
    ".json": "application/json",
}
#: A bundle's name: flat, no path separator, a known suffix.
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}$")
_NOT_BUILT = (
    "<!doctype html><title>flowyard</title><p>The console is not built in this checkout: "
    "run <code>make ui</code> (needs Node), or use the API at <a href='/docs'>/docs</a>.</p>"
)


class _Index:
    """``index.html``, read once, with its ETag."""

    def __init__(self, static: Path) -> None:
        path = static / "index.html"
        self.body = path.read_bytes() if path.is_file() else _NOT_BUILT.encode()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    def response(self, request: Request) -> Response:
        headers = {
            "Cache-Control": REVALIDATE,
            "ETag": self.etag,
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Referrer-Policy": "same-origin",
        }
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return HTMLResponse(self.body, headers=headers)


def is_deep_link(path: str) -> bool:
    """A path of one of the console's pages: ``/`` or under one of :data:`SECTIONS`."""
    return path == "/" or path.split("/", 2)[1] in SECTIONS


def install(app: Starlette, static: Path = STATIC_DIR) -> None:
    """Serve the console from ``static`` at ``/``; call after every other route is added
    (the deep-link fallback matches any path left)."""
    index = _Index(static)
    assets = static / "assets"

    async def asset(request: Request) -> Response:
        name = str(request.path_params["name"])
        media_type = _TYPES.get(Path(name).suffix)
        path = assets / name
        if media_type is None or not _ASSET_NAME.match(name) or not path.is_file():
            raise HTTPException(404, "no such asset")
        return FileResponse(
            path,
            media_type=media_type,
            headers={
                "Cache-Control": IMMUTABLE,
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            },
        )

    async def favicon(request: Request) -> Response:
        path = static / "favicon.svg"
        if not path.is_file():
            raise HTTPException(404, "no favicon")
        return FileResponse(path, media_type=_TYPES[".svg"], headers={"Cache-Control": REVALIDATE})

    async def page(request: Request) -> Response:
        return index.response(request)

    app.add_route("/assets/{name}", asset, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/favicon.svg", favicon, methods=["GET", "HEAD"], include_in_schema=False)
    app.router.routes.append(
        _DeepLink("/{path:path}", page, methods=["GET", "HEAD"], include_in_schema=False)
    )


class _DeepLink(Route):
    """The console's pages only: any other path is left to the server's routes and 404."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """No match at all outside the console's sections."""
        if scope["type"] == "http" and not is_deep_link(str(scope["path"])):
            return Match.NONE, {}
        return super().matches(scope)
