"""A local Salesforce on 127.0.0.1: the OAuth 2.0 token endpoint and the REST API's sObject
and query resources, speaking Salesforce's wire protocol (URLs, form-encoded token
requests, JSON bodies, the ``[{"message", "errorCode", "fields"}]`` error array, OAuth error
answers), with an in-memory store, scriptable failures and call counters.

    with FakeSalesforce() as sf:              # or sf = FakeSalesforce().start(); sf.stop()
        sf.add_app("app-1", client_secret="s3cret", refresh_token="r-1")
        sf.fail(503, SERVER_UNAVAILABLE, times=2)   # the next two REST calls
        ...
        sf.calls["create"], sf.calls["token"], sf.records["Lead"]
        sf.latency_s = 0.2                          # every REST answer takes this long
        sf.times, sf.max_in_flight                  # when REST calls arrived; most at once

What it does as Salesforce does: record ids of 15/18 characters (the 18-character case-safe
suffix computed), required fields (``REQUIRED_FIELD_MISSING``), unknown fields
(``INVALID_FIELD``), unknown objects (``NOT_FOUND``; ``INVALID_TYPE`` in SOQL), duplicate rules
on unique fields (``DUPLICATES_DETECTED`` with ``duplicateResult.matchResults``), upsert by
external id (201 created / 200 updated / 300 several matches), a tiny SOQL (``SELECT f, g FROM
Obj [WHERE F = 'x' [AND ...]] [LIMIT n]``) paginated with ``nextRecordsUrl``, and
``INVALID_SESSION_ID`` for tokens it did not issue or has expired (:meth:`expire_tokens`).
The JWT bearer grant verifies the assertion's RS256 signature with the app's public key, its
issuer, subject, audience (this server's origin, or :attr:`audience`) and expiry.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

from fakes.salesforce_org import (
    LIMIT_EXCEEDED,
    NOT_FOUND,
    SERVER_UNAVAILABLE,
    SESSION_EXPIRED,
    Org,
    Reply,
    id18,
)

__all__ = [
    "LIMIT_EXCEEDED",
    "NOT_FOUND",
    "SERVER_UNAVAILABLE",
    "SESSION_EXPIRED",
    "ConnectedApp",
    "Failure",
    "FakeSalesforce",
    "Seen",
    "id18",
]


@dataclass
class ConnectedApp:
    """A connected app: its secret, the refresh tokens it issued, its certificate's public
    key (JWT bearer) and the users it may act for."""

    client_id: str
    client_secret: str | None = None
    refresh_tokens: set[str] = field(default_factory=set)
    public_key: str | None = None
    usernames: set[str] = field(default_factory=set)


@dataclass
class Failure:
    """A scripted answer: to the next request of kind ``match`` (an operation: create,
    update, upsert, get, delete, query, query_more, or token; None: any REST call), after
    ``delay_s``. Status 0 drops the connection without answering."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    match: str | None = None
    content_type: str = "application/json;charset=UTF-8"
    delay_s: float = 0.0


@dataclass
class Seen:
    """One request as the fake saw it."""

    kind: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a step's deadline passed) is expected here.
        pass


class FakeSalesforce:
    """The fake server (see the module docstring). Thread-safe; every attribute read by
    tests is updated under its lock."""

    def __init__(self, *, page_size: int = 2000) -> None:
        #: The org's data (``org.page_size``: rows per query page; ``org.unique``: fields
        #: its duplicate rules keep unique).
        self.org = Org(page_size)
        self.apps: dict[str, ConnectedApp] = {}
        self.calls: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.failures: list[Failure] = []
        #: The ``instance_url`` token answers name (None: this server).
        self.token_instance_url: str | None = None
        #: The audience JWT assertions must name (None: this server's origin).
        self.audience: str | None = None
        #: ``expires_in`` of token answers (None: left out, as Salesforce does).
        self.token_expires_in: int | None = None
        #: Every access token issued, in order (also those expired since).
        self.issued: list[str] = []
        #: How long every REST answer takes (a busy org), so calls overlap.
        self.latency_s = 0.0
        #: When each REST call arrived (``time.monotonic()``), in order; the token endpoint
        #: is not counted (Salesforce's API limits count REST calls).
        self.times: list[float] = []
        #: REST calls being answered now, and the most there ever were at once.
        self.in_flight = 0
        self.max_in_flight = 0
        self._tokens: set[str] = set()
        self._lock = threading.RLock()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload, headers = fake._serve(self, body)
                if status == 0:  # scripted: drop the connection without an answer
                    self.close_connection = True
                    return
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeSalesforce:
        """Start serving (in a thread); returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeSalesforce:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the instance and the token host)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- scripting ---------------------------------------------------------------------

    def add_app(
        self,
        client_id: str,
        *,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        public_key: str | None = None,
        username: str | None = None,
    ) -> ConnectedApp:
        """Register a connected app (or add a refresh token / user to one)."""
        with self._lock:
            app = self.apps.setdefault(client_id, ConnectedApp(client_id))
            app.client_secret = client_secret or app.client_secret
            app.public_key = public_key or app.public_key
            if refresh_token:
                app.refresh_tokens.add(refresh_token)
            if username:
                app.usernames.add(username)
            return app

    def fail(
        self,
        status: int,
        body: Any,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        match: str | None = None,
        content_type: str = "application/json;charset=UTF-8",
        delay_s: float = 0.0,
    ) -> None:
        """Answer the next ``times`` requests of kind ``match`` with ``status`` and ``body``
        (JSON, or bytes sent as they are), after ``delay_s`` seconds."""
        failure = Failure(status, body, headers or {}, match, content_type, delay_s)
        with self._lock:
            self.failures.extend([failure] * times)

    def expire_tokens(self) -> None:
        """Every access token issued so far is refused from now on (INVALID_SESSION_ID)."""
        with self._lock:
            self._tokens.clear()

    def tokens(self) -> set[str]:
        """The access tokens currently valid."""
        with self._lock:
            return set(self._tokens)

    def add_record(self, obj: str, fields: dict[str, Any]) -> str:
        """Store a record directly (no rules); returns its 18-character id."""
        with self._lock:
            return self.org.insert(obj, fields)

    def of(self, kind: str) -> list[Seen]:
        """The requests of one kind, in order."""
        with self._lock:
            return [s for s in self.seen if s.kind == kind]

    # -- dispatch ----------------------------------------------------------------------

    def _serve(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """:meth:`_dispatch`, counting REST calls in flight and their arrival times."""
        rest = urlsplit(handler.path).path != "/services/oauth2/token"
        if not rest:
            return self._dispatch(handler, body)
        with self._lock:
            self.times.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                threading.Event().wait(self.latency_s)
            return self._dispatch(handler, body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _dispatch(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        split = urlsplit(handler.path)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        method = handler.command
        kind = _kind(method, segments)
        headers = dict(handler.headers.items())
        with self._lock:
            self.calls[kind] += 1
            self.seen.append(Seen(kind, method, split.path, parse_qs(split.query), headers, body))
            failure = self._next_failure(kind)
        if failure is not None:
            if failure.delay_s:
                threading.Event().wait(failure.delay_s)
            raw = (
                failure.body
                if isinstance(failure.body, bytes)
                else json.dumps(failure.body).encode()
            )
            return failure.status, raw, {"Content-Type": failure.content_type, **failure.headers}
        try:
            with self._lock:
                if kind == "token":
                    result = self._token(body)
                else:
                    self._authorize(headers)
                    result = self.org.rest(kind, segments, parse_qs(split.query), body)
            status, payload, extra = 200, result, {}
            if isinstance(result, Reply):  # a success status other than 200
                status, payload, extra = result.status, result.body, result.headers
        except Reply as reply:
            status, payload, extra = reply.status, reply.body, reply.headers
        raw = b"" if payload is None else json.dumps(payload).encode()
        headers_out = {"Content-Type": "application/json;charset=UTF-8", **extra}
        return status, raw, headers_out

    def _next_failure(self, kind: str) -> Failure | None:
        for index, failure in enumerate(self.failures):
            if failure.match == kind or (failure.match is None and kind != "token"):
                return self.failures.pop(index)
        return None

    def _authorize(self, headers: dict[str, str]) -> None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not value.startswith("Bearer ") or value[7:] not in self._tokens:
            raise Reply(401, SESSION_EXPIRED, {"WWW-Authenticate": "Token"})

    # -- OAuth -------------------------------------------------------------------------

    def _token(self, body: bytes) -> Any:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            app = self._jwt_app(form.get("assertion", ""))
        elif grant in ("refresh_token", "client_credentials"):
            app = self.apps.get(form.get("client_id", ""))
            if app is None:
                raise _oauth("invalid_client_id", "client identifier invalid")
            if not app.client_secret or form.get("client_secret") != app.client_secret:
                raise _oauth("invalid_client", "invalid client credentials")
            if grant == "refresh_token" and form.get("refresh_token") not in app.refresh_tokens:
                raise _oauth("invalid_grant", "expired access/refresh token")
        else:
            raise _oauth("unsupported_grant_type", "grant type not supported")
        token = f"00D5g00000{secrets.token_hex(4)}!{secrets.token_urlsafe(24)}"
        self._tokens.add(token)
        self.issued.append(token)
        answer = {
            "access_token": token,
            "signature": secrets.token_urlsafe(16),
            "scope": "api",
            "instance_url": self.token_instance_url or self.url,
            "id": f"{self.url}/id/00D5g000000ORG/0055g000000USR",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
        }
        if self.token_expires_in is not None:
            answer["expires_in"] = self.token_expires_in
        return answer

    def _jwt_app(self, assertion: str) -> ConnectedApp:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _oauth("invalid_grant", "invalid assertion") from None
        app = self.apps.get(str(claims.get("iss")))
        if app is None or app.public_key is None:
            raise _oauth("invalid_client_id", "client identifier invalid")
        try:
            jwt.decode(
                assertion,
                app.public_key,
                algorithms=["RS256"],
                audience=self.audience or self.url,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _oauth("invalid_grant", "expired authorization code") from None
        except jwt.InvalidAudienceError:
            raise _oauth("invalid_grant", "audience is invalid") from None
        except jwt.PyJWTError:
            raise _oauth("invalid_grant", "invalid assertion") from None
        if claims["exp"] > time.time() + 300:
            raise _oauth("invalid_grant", "invalid assertion")
        if claims.get("sub") not in app.usernames:
            raise _oauth("invalid_grant", "user hasn't approved this consumer")
        return app

    @property
    def records(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The org's records: object -> id -> fields."""
        return self.org.records


def _kind(method: str, segs: list[str]) -> str:
    """The operation a request is, from its method and path."""
    if segs[:3] == ["services", "oauth2", "token"] and method == "POST":
        return "token"
    if len(segs) < 4 or segs[:2] != ["services", "data"] or not re.match(r"^v\d+\.\d$", segs[2]):
        return "unknown"
    rest = segs[3:]
    table = {
        ("query", 1, "GET"): "query",
        ("query", 2, "GET"): "query_more",
        ("sobjects", 2, "POST"): "create",
        ("sobjects", 3, "POST"): "create",  # the trailing slash: /sobjects/Lead/
        ("sobjects", 3, "GET"): "get",
        ("sobjects", 3, "PATCH"): "update",
        ("sobjects", 3, "DELETE"): "delete",
        ("sobjects", 4, "PATCH"): "upsert",
    }
    if rest[0] == "sobjects" and len(rest) == 3 and method == "POST" and rest[2]:
        return "unknown"
    return table.get((rest[0], len(rest), method), "unknown")


def _oauth(error: str, description: str) -> Reply:
    return Reply(400, {"error": error, "error_description": description})
