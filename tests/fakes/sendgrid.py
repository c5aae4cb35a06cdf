"""A local SendGrid v3 ``POST /v3/mail/send`` for the email node's tests (HTTP on 127.0.0.1,
in a thread): bearer API key, the request body checked the way SendGrid documents it, its
error bodies (``{"errors": [{"message", "field", "help"}]}``), 202 with ``X-Message-Id``,
429 with ``Retry-After`` and ``X-RateLimit-*``, 413 past a payload size, 403 for an
unverified sender; a queue of scripted answers (any status, any bytes) served first, and
counters."""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
UNVERIFIED = (
    "The from address does not match a verified Sender Identity. Mail cannot be sent until "
    "this error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/"
    "sender-identity/ to see the Sender Identity requirements"
)
RESERVED = {
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
}  # fmt: skip


def error(message: str, field: str | None = None, help: str | None = None) -> dict[str, Any]:
    """One entry of SendGrid's error list."""
    return {"message": message, "field": field, "help": help}


@dataclass
class Answer:
    """A scripted answer: a status with a JSON body, or raw bytes."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"


def too_many(retry_after_s: int = 1) -> Answer:
    """SendGrid's rate-limit answer."""
    return Answer(
        429,
        {"errors": [error("too many requests")]},
        {
            "Retry-After": str(retry_after_s),
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + retry_after_s),
        },
    )


def _problems(body: Any) -> list[dict[str, Any]]:
    """What SendGrid's validation says about a mail/send body (a subset of its rules)."""
    if not isinstance(body, dict):
        return [error("Bad Request")]
    found = _recipient_problems(body.get("personalizations"))
    sender = body.get("from")
    if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
        found.append(
            error(
                "The from email does not contain a valid address.",
                "from.email",
                f"{HELP}#message.from",
            )
        )
    if not body.get("subject"):
        found.append(
            error(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
                f"{HELP}#message.subject",
            )
        )
    found += _content_problems(body.get("content") or [])
    found += _header_problems(body.get("headers") or {}, body.get("custom_args") or {})
    return found


def _recipient_problems(people: Any) -> list[dict[str, Any]]:
    if not isinstance(people, list) or not people:
        return [error("You must have at least one personalization.", "personalizations")]
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, person in enumerate(people):
        if not person.get("to"):
            found.append(
                error(
                    "The to array is required for all personalization objects, and must have "
                    "at least one email object with a valid email address.",
                    f"personalizations.{i}.to",
                    f"{HELP}#message.to",
                )
            )
        for kind in ("to", "cc", "bcc"):
            for entry in person.get(kind) or []:
                email = str(entry.get("email", "")).lower()
                where = f"personalizations.{i}.{kind}"
                if "@" not in email:
                    found.append(error("Does not contain a valid address.", f"{where}.email"))
                elif email in seen:
                    found.append(
                        error(
                            "Each email address in the personalization block should be unique "
                            "between to, cc, and bcc. We found the first duplicate instance of "
                            f"[{email}] in the {where} field.",
                            where,
                            f"{HELP}#message.personalizations",
                        )
                    )
                seen.add(email)
    return found


def _content_problems(content: list[Any]) -> list[dict[str, Any]]:
    help = f"{HELP}#message.content"
    if not content:
        return [
            error(
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
                "content",
                help,
            )
        ]
    found = [
        error(
            "The content value must be a string at least one character in length.",
            f"content.{i}.value",
            help,
        )
        for i, block in enumerate(content)
        if not block.get("value")
    ]
    types = [block.get("type") for block in content]
    if "text/plain" in types and types[0] != "text/plain":
        found.append(
            error(
                "If present, text/plain content must be first, followed by text/html content "
                "and then any other content.",
                "content.0.type",
                help,
            )
        )
    return found


def _header_problems(headers: dict[str, Any], args: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for name, value in headers.items():
        if name.lower() in RESERVED:
            found.append(
                error(
                    f"The header '{name}' is a reserved header and cannot be modified.",
                    "headers",
                    f"{HELP}#message.headers",
                )
            )
        if not isinstance(value, str):
            found.append(error("Invalid type. Expected: string.", f"headers.{name}"))
    for name, value in args.items():
        if not isinstance(value, str):
            found.append(error("Invalid type. Expected: string.", f"custom_args.{name}"))
    return found


class FakeSendgrid:
    """The mail/send endpoint on 127.0.0.1."""

    def __init__(
        self,
        api_key: str,
        *,
        verified_senders: set[str] | None = None,
        max_payload_bytes: int = 30 * 1024 * 1024,
    ) -> None:
        self.api_key = api_key
        self.verified_senders = verified_senders
        self.max_payload_bytes = max_payload_bytes
        #: Answers served before any check, oldest first.
        self.queue: list[Answer] = []
        #: Every request: (path, headers, body bytes).
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        #: Accepted payloads and the X-Message-Id each got.
        self.sent: list[tuple[dict[str, Any], str]] = []
        self._lock = threading.Lock()
        fake = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with fake._lock:
                    fake.requests.append((self.path, dict(self.headers.items()), raw))
                    answer = fake._answer(self.path, dict(self.headers.items()), raw)
                self._reply(answer)

            do_GET = do_PUT = do_DELETE = do_POST

            def _reply(self, answer: Answer) -> None:
                payload = answer.raw
                if payload is None:
                    payload = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                if payload:
                    self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL (a credential's ``base_url``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def calls(self) -> int:
        """Requests received."""
        return len(self.requests)

    def script(self, *answers: Answer) -> None:
        """Serve ``answers`` to the next requests, before any check."""
        with self._lock:
            self.queue.extend(answers)

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        if self.queue:
            return self.queue.pop(0)
        if path != "/v3/mail/send":
            return Answer(404, {"errors": [error("Not Found")]})
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            return Answer(401, {"errors": [error(UNAUTHORIZED)]})
        if len(raw) > self.max_payload_bytes:
            return Answer(413, {"errors": [error("Payload Too Large")]})
        try:
            body = json.loads(raw)
        except ValueError:
            return Answer(400, {"errors": [error("Bad Request")]})
        problems = _problems(body)
        if problems:
            return Answer(400, {"errors": problems})
        sender = str(body["from"]["email"]).lower()
        if self.verified_senders is not None and sender not in self.verified_senders:
            return Answer(403, {"errors": [error(UNVERIFIED, "from")]})
        message_id = secrets.token_urlsafe(16)[:22]
        self.sent.append((body, message_id))
        return Answer(202, None, {"X-Message-Id": message_id})

    def start(self) -> FakeSendgrid:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
