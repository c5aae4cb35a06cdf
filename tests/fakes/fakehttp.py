"""The base of the local provider fakes (Twilio, Slack, Meta Graph): a threaded HTTP/1.1
server on 127.0.0.1 that records every request, answers scripted failures first (a queue,
one answer per request), and otherwise speaks its provider's protocol (``handle``).

Tests reach it over real sockets through flowyard's own client; nothing of ours is mocked.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request as the fake received it (header names in lower case)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        """The body as an ``application/x-www-form-urlencoded`` form (repeated keys kept)."""
        return parse_qs(self.body.decode(), keep_blank_values=True)

    def basic_auth(self) -> tuple[str, str] | None:
        """The user and password of an ``Authorization: Basic`` header."""
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer`` header."""
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        return value if scheme.lower() == "bearer" and value else None


@dataclass
class Answer:
    """What the fake sends back: ``body`` as JSON unless it is bytes (sent as they are)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"

    def payload(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def html(status: int, text: str = "Bad Gateway") -> Answer:
    """An HTML error page, as a proxy or load balancer in front of the provider sends."""
    page = f"<html><head><title>{status} {text}</title></head><body><h1>{text}</h1></body></html>"
    return Answer(status, page.encode(), content_type="text/html")


def truncated_json(status: int = 200) -> Answer:
    """A JSON answer cut off in the middle (a dropped connection behind a proxy)."""
    return Answer(status, b'{"ok": true, "sid": "SM0123', content_type="application/json")


def huge(status: int = 200, size: int = 2 * 1024 * 1024) -> Answer:
    """A JSON answer larger than any provider answer (``size`` bytes)."""
    return Answer(status, b'{"padding": "' + b"x" * size + b'"}')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a step's deadline) is expected in these tests.
        pass


class FakeServer:
    """A provider fake: subclasses implement :meth:`handle` (the protocol)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._queue: deque[Answer] = deque()
        self._lock = threading.Lock()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                answer = fake._answer(request)
                payload = answer.payload()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _answer(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            scripted = self._queue.popleft() if self._queue else None
        return scripted if scripted is not None else self.handle(request)

    def handle(self, request: Request) -> Answer:
        """The provider's answer to ``request`` (no scripted failure pending)."""
        raise NotImplementedError

    def fail_next(self, *answers: Answer) -> None:
        """Answer the next requests with ``answers``, in order, before the protocol resumes."""
        with self._lock:
            self._queue.extend(answers)

    @property
    def calls(self) -> int:
        """How many requests the fake received."""
        with self._lock:
            return len(self.requests)

    @property
    def url(self) -> str:
        """Base URL (no trailing slash)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
