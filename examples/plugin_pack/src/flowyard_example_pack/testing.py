"""A local Discord for tests and demos: the "Create Message" endpoint of the REST API v10 on
127.0.0.1, speaking Discord's wire protocol (its message objects, error bodies and rate
limit), counting what it was sent. The pack's own tests and flowyard's suite use it; a
workflow author can point ``api_base`` at it too.

Shipping a fake of its provider with a pack lets its users test their workflows without the
provider, over real sockets, with nothing of flowyard mocked.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

#: The path prefix of the API version the node speaks.
API_PATH = "/api/v10"


@dataclass
class Answer:
    """A scripted answer: ``body`` as JSON; ``after_post`` posts the message first (the
    provider acted, then the answer was lost: a 502 from a proxy, say)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    after_post: bool = False


def rate_limited(retry_after_s: float = 1.5, *, global_: bool = False) -> Answer:
    """Discord's 429: ``Retry-After`` and the body's ``retry_after``."""
    return Answer(
        429,
        {"message": "You are being rate limited.", "retry_after": retry_after_s, "global": global_},
        {"Retry-After": str(int(retry_after_s) + 1), "X-RateLimit-Scope": "user"},
    )


def server_error(status: int = 502, *, after_post: bool = False) -> Answer:
    """A 5xx without Discord's body, before (or, with ``after_post``, after) posting."""
    return Answer(status, {"message": "Bad Gateway", "code": 0}, after_post=after_post)


@dataclass
class Channel:
    """A channel the bot may (``can_send``) or may not post to."""

    id: str
    can_send: bool = True


@dataclass
class Message:
    """A posted message."""

    id: str
    channel_id: str
    content: str
    nonce: str | None
    timestamp: str
    allowed_mentions: Any = None

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": 0,
            "channel_id": self.channel_id,
            "content": self.content,
            "nonce": self.nonce,
            "timestamp": self.timestamp,
            "author": {"id": "1100000000000000001", "username": "flowyard", "bot": True},
            "mentions": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "tts": False,
        }


class FakeDiscord:
    """Bot ``tokens`` and ``channels``; ``messages`` posted; ``requests`` received (method,
    path, headers lower-cased, body). Use as a context manager; ``api_base`` is what the
    node's config takes."""

    def __init__(self, tokens: set[str], channels: list[Channel]) -> None:
        self.tokens = set(tokens)
        self.channels = {c.id: c for c in channels}
        self.messages: list[Message] = []
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Answer] = deque()
        self._ids = itertools.count(1_200_000_000_000_000_001)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = fake._answer(self.path, headers, raw)
                payload = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        """``http://127.0.0.1:<port>/api/v10``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{API_PATH}"

    @property
    def origin(self) -> str:
        """The origin to allow the bot's credential for."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, *answers: Answer) -> None:
        """Answer the next requests with ``answers``, in order."""
        with self._lock:
            self._script.extend(answers)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": raw})
            scripted = self._script.popleft() if self._script else None
            if scripted is not None and not scripted.after_post:
                return scripted
            answer = self._create(path, headers, raw)
            return scripted if scripted is not None else answer

    def _create(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        """Create Message: auth, channel, permission, form, the nonce, then the message."""
        parts = path.split("/")
        # ['', 'api', 'v10', 'channels', '<id>', 'messages']
        if len(parts) != 6 or parts[1:4] != ["api", "v10", "channels"] or parts[5] != "messages":
            return Answer(404, {"message": "404: Not Found", "code": 0})
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme != "Bot" or token not in self.tokens:
            return Answer(401, {"message": "401: Unauthorized", "code": 0})
        channel = self.channels.get(parts[4])
        if channel is None:
            return Answer(404, {"message": "Unknown Channel", "code": 10003})
        if not channel.can_send:
            return Answer(403, {"message": "Missing Permissions", "code": 50013})
        try:
            body = json.loads(raw)
        except ValueError:
            return Answer(400, {"message": "400: Bad Request", "code": 0})
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, str) or not content or len(content) > 2000:
            return Answer(
                400,
                {
                    "code": 50035,
                    "message": "Invalid Form Body",
                    "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}},
                },
            )
        nonce = body.get("nonce")
        if body.get("enforce_nonce") and nonce is not None:
            for message in self.messages:
                if message.nonce == nonce and message.channel_id == channel.id:
                    return Answer(200, message.json())
        message = Message(
            id=str(next(self._ids)),
            channel_id=channel.id,
            content=content,
            nonce=None if nonce is None else str(nonce),
            timestamp=datetime.now(UTC).isoformat(),
            allowed_mentions=body.get("allowed_mentions"),
        )
        self.messages.append(message)
        return Answer(200, message.json())
