"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served with their own assets, no CDN.

The JavaScript, CSS and icon are those the ``fastapi-offline`` package ships; they are
served under :data:`ASSETS`, so the pages work without internet access and load nothing
from a third party (FastAPI's defaults load them from a CDN, without integrity checks).
Only the assets are taken from that package: its ``FastAPIOffline`` factory would build the
app itself and add the pages as API routes, under the RBAC dependency of every API route.

Each page carries a Content-Security-Policy: scripts only from this origin plus the page's
inline bootstrap script (allowed by its hash), requests only to this origin, no frames.
Both pages were checked to render under it in headless Chromium (no violation but ReDoc's
logo, which it would fetch from its own CDN).
The pages and assets are public, like ``/openapi.json``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse

#: Where the assets are served.
ASSETS = "/docs/assets"
_STATIC = Path(fastapi_offline.__file__).parent / "static"
#: The files served, with their types: a guessed type (``mimetypes`` reads the system's
#: tables, and some map ``.js`` to ``text/plain``) would be refused under ``nosniff``.
_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str) -> str:
    """The policy of a docs page: its inline scripts are allowed by their SHA-256 hashes."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    ]
    scripts = " ".join(["'self'", *hashes])
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts}",
            # Both UIs set inline styles on their elements.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "worker-src blob:",  # ReDoc's search index runs in a worker it builds
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = content_security_policy(bytes(page.body).decode())
    return page


def install(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs_url``, ReDoc at ``redoc_url`` and their assets. The app
    must be built with ``docs_url=None, redoc_url=None`` (no CDN pages of its own)."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + oauth2_redirect_url,
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        return _with_policy(page)

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return _with_policy(get_swagger_ui_oauth2_redirect_html())

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        return _with_policy(page)

    async def asset(request: Request) -> FileResponse:
        name = str(request.path_params["name"])
        media_type = _TYPES.get(name)
        if media_type is None:
            raise HTTPException(404, "no such asset")
        return FileResponse(_STATIC / name, media_type=media_type)

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect_url, oauth2_redirect, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)
    app.add_route(ASSETS + "/{name}", asset, include_in_schema=False)
