"""A local HTTP server that records requests and answers from a script, for node tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Reply:
    """A scripted answer."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Handler = Callable[[Recorded], Reply]


class _Server(ThreadingHTTPServer):
    # Bursts of concurrent workers overflow the default backlog of 5 (connection resets).
    request_queue_size = 1024
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a SIGKILLed worker) is expected in these tests.
        pass


class RecordingServer:
    """Threaded HTTP server on 127.0.0.1 with per-path handlers (default: 200 {"ok": true}).

    ``script(path, [Reply, ...])`` answers successive requests to ``path`` with the replies in
    order (the last one repeats).
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                rec = Recorded(self.command, self.path, dict(self.headers.items()), body)
                with server._lock:
                    server.requests.append(rec)
                    handler = server._handlers.get(path)
                reply = handler(rec) if handler else Reply()
                if reply.delay_s:
                    threading.Event().wait(reply.delay_s)
                payload = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), _H)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def on(self, path: str, handler: Handler) -> None:
        """Answer requests to ``path`` with ``handler``."""
        with self._lock:
            self._handlers[path] = handler

    def script(self, path: str, replies: list[Reply]) -> None:
        """Answer successive requests to ``path`` with ``replies`` (the last repeats)."""
        remaining = list(replies)

        def handler(_: Recorded) -> Reply:
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

        self.on(path, handler)

    def to(self, path: str) -> list[Recorded]:
        """Requests received for ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def start(self) -> RecordingServer:
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
