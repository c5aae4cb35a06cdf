"""A local Slack: the Web API method ``chat.postMessage``.

``POST /api/chat.postMessage`` with ``Authorization: Bearer <token>`` and a JSON (or form)
body. Like Slack, it answers HTTP 200 both ways: ``{"ok": true, "channel", "ts",
"message"}`` or ``{"ok": false, "error": "<code>"}`` (``not_authed``, ``invalid_auth``,
``channel_not_found``, ``not_in_channel``, ``is_archived``, ``no_text``, ``msg_too_long``,
``invalid_blocks``); a JSON body without a charset gets the ``missing_charset`` warning.
A rate limit is HTTP 429 with ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``
(script it with :func:`rate_limited`).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from fakes.fakehttp import Answer, FakeServer, Request

#: Slack truncates longer messages and refuses those past 40,000 characters.
MAX_TEXT = 40_000


def slack_error(error: str, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    """Slack's failure answer for ``error``."""
    return Answer(status, {"ok": False, "error": error}, headers=headers or {})


def rate_limited(retry_after_s: int = 30) -> Answer:
    """HTTP 429 ``ratelimited`` with ``Retry-After``."""
    return slack_error("ratelimited", 429, {"Retry-After": str(retry_after_s)})


@dataclass
class Channel:
    id: str
    name: str
    member: bool = True
    archived: bool = False


@dataclass
class FakeSlack(FakeServer):
    """Bot tokens (their team) and channels."""

    tokens: dict[str, str] = field(default_factory=dict)
    channels: list[Channel] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()
        self._clock = itertools.count(1_503_435_956)

    def handle(self, request: Request) -> Answer:
        if request.path != "/api/chat.postMessage":
            return slack_error("unknown_method", 404)
        token = request.bearer()
        if token is None:
            return slack_error("not_authed")
        if token not in self.tokens:
            return slack_error("invalid_auth")
        content_type = request.headers.get("content-type", "")
        warnings: list[str] = []
        if content_type.startswith("application/json"):
            if "charset" not in content_type:
                warnings.append("missing_charset")
            try:
                args = request.json()
            except ValueError:
                return slack_error("invalid_json")
            if not isinstance(args, dict):
                return slack_error("invalid_json")
        else:
            args = {k: v[0] for k, v in request.form().items()}
        return self._post(args, warnings)

    def _post(self, args: dict[str, Any], warnings: list[str]) -> Answer:
        wanted = str(args.get("channel") or "").removeprefix("#")
        channel = next((c for c in self.channels if wanted in (c.id, c.name)), None)
        if channel is None:
            return slack_error("channel_not_found")
        if channel.archived:
            return slack_error("is_archived")
        if not channel.member:
            return slack_error("not_in_channel")
        text, blocks = args.get("text"), args.get("blocks")
        if isinstance(blocks, str):  # a form body carries blocks as a JSON string
            blocks = json.loads(blocks)
        if blocks is not None and not isinstance(blocks, list):
            return slack_error("invalid_blocks")
        if not text and not blocks:
            return slack_error("no_text")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            return slack_error("msg_too_long")
        ts = f"{next(self._clock)}.{len(self.posted):06d}"
        message = {
            "type": "message",
            "user": "U0BOT",
            "bot_id": "B0BOT",
            "text": text or "",
            "ts": ts,
        }
        if blocks:
            message["blocks"] = blocks
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        self.posted.append({**message, "channel": channel.id})
        answer: dict[str, Any] = {"ok": True, "channel": channel.id, "ts": ts, "message": message}
        if warnings:
            answer["warning"] = ",".join(warnings)
            answer["response_metadata"] = {"warnings": warnings}
        return Answer(200, answer)
