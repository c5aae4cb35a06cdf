"""A local Meta Graph API for Instagram: messaging and comment moderation.

Routes (``/{version}/...``, JSON bodies, the token as ``Authorization: Bearer`` or the
``access_token`` query parameter, as Graph takes both):

- ``POST /{ig-user-id}/messages`` ``{"recipient": {"id"}, "message": {"text"}}`` ->
  ``{"recipient_id", "message_id"}``; a person whose 24-hour window is closed gets code 10,
  subcode 2018278 ("This message is sent outside of allowed window");
- ``POST /{ig-comment-id}/replies`` ``{"message"}`` -> ``{"id"}``;
- ``POST /{ig-comment-id}`` ``{"hide": bool}`` -> ``{"success": true}``;
- ``POST /{ig-user-id}/likes`` ``{"media_id"}`` or ``{"comment_id"}`` -> ``{"success": true}``.

Errors are Graph's ``{"error": {"message", "type", "code", "error_subcode", "is_transient",
"fbtrace_id"}}`` with HTTP 400 (190 invalid token, 104 no token, 100 invalid parameter or
unknown object); rate limits (4, 17, 32, 613) are scripted with :func:`graph_error`.
"""

from __future__ import annotations

import itertools
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from fakes.fakehttp import Answer, FakeServer, Request

OUTSIDE_WINDOW = 2018278


def graph_error(
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    status: int = 400,
    type_: str = "OAuthException",
    is_transient: bool | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Graph's error body."""
    error: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if is_transient is not None:
        error["is_transient"] = is_transient
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(15)
    return Answer(status, {"error": error}, headers=headers or {})


def rate_limited(code: int = 4, *, regain_minutes: int | None = None) -> Answer:
    """A rate-limit error; with ``regain_minutes`` the ``X-Business-Use-Case-Usage`` header
    Graph sends with Instagram's business-use-case limits."""
    messages = {
        4: "Application request limit reached",
        17: "User request limit reached",
        32: "Page request limit reached",
        613: "Calls to this api have exceeded the rate limit.",
    }
    headers = {}
    if regain_minutes is not None:
        usage = {
            "17841400000000001": [
                {
                    "type": "instagram",
                    "call_count": 100,
                    "total_cputime": 20,
                    "total_time": 30,
                    "estimated_time_to_regain_access": regain_minutes,
                }
            ]
        }
        headers["X-Business-Use-Case-Usage"] = json.dumps(usage)
    return graph_error(code, messages.get(code, "Rate limited"), is_transient=True, headers=headers)


def unknown_object(object_id: str) -> Answer:
    return graph_error(
        100,
        f"Unsupported post request. Object with ID '{object_id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation.",
        subcode=33,
        type_="GraphMethodException",
    )


@dataclass
class FakeGraph(FakeServer):
    """One Instagram professional account, the people who messaged it, its media and
    comments."""

    token: str = ""
    account_id: str = "17841400000000001"
    version: str = "v21.0"
    #: IGSIDs who messaged the account within 24 hours; ``closed``: earlier than that.
    open_window: set[str] = field(default_factory=set)
    closed_window: set[str] = field(default_factory=set)
    media: set[str] = field(default_factory=set)
    comments: set[str] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    hidden: dict[str, bool] = field(default_factory=dict)
    likes: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(17_900_000_000_000_001)

    def handle(self, request: Request) -> Answer:
        token = request.bearer() or (request.query.get("access_token") or [None])[0]
        if token is None:
            return graph_error(104, "An access token is required to request this resource.")
        if token != self.token:
            return graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        parts = request.path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != self.version or request.method != "POST":
            return graph_error(2500, f"Unknown path components: {request.path}")
        try:
            args = request.json() if request.body else {}
        except ValueError:
            return graph_error(100, "Invalid JSON in the request body")
        if not isinstance(args, dict):
            return graph_error(100, "Invalid parameter")
        match parts[1:]:
            case [self.account_id, "messages"]:
                return self._message(args)
            case [self.account_id, "likes"]:
                return self._like(args)
            case [comment, "replies"]:
                return self._reply(comment, args)
            case [comment]:
                return self._hide(comment, args)
        return graph_error(2500, f"Unknown path components: {request.path}")

    def _message(self, args: dict[str, Any]) -> Answer:
        recipient = (args.get("recipient") or {}).get("id")
        text = (args.get("message") or {}).get("text")
        if not recipient or not isinstance(text, str) or not text:
            return graph_error(100, "(#100) The parameter recipient or message is required")
        if recipient in self.closed_window:
            return graph_error(
                10,
                "(#10) This message is sent outside of allowed window.",
                subcode=OUTSIDE_WINDOW,
            )
        if recipient not in self.open_window:
            return graph_error(100, "(#100) No matching user found", subcode=2018001)
        message_id = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOj" + secrets.token_hex(8)
        self.messages.append({"recipient": recipient, "text": text, "id": message_id})
        return Answer(200, {"recipient_id": recipient, "message_id": message_id})

    def _reply(self, comment: str, args: dict[str, Any]) -> Answer:
        if comment not in self.comments:
            return unknown_object(comment)
        if not args.get("message"):
            return graph_error(100, "(#100) The parameter message is required")
        reply = str(next(self._ids))
        self.replies.append({"comment": comment, "message": args["message"], "id": reply})
        return Answer(200, {"id": reply})

    def _hide(self, comment: str, args: dict[str, Any]) -> Answer:
        if comment not in self.comments:
            return unknown_object(comment)
        if not isinstance(args.get("hide"), bool):
            return graph_error(100, "(#100) The parameter hide is required")
        self.hidden[comment] = args["hide"]
        return Answer(200, {"success": True})

    def _like(self, args: dict[str, Any]) -> Answer:
        media, comment = args.get("media_id"), args.get("comment_id")
        if (media is None) == (comment is None):
            return graph_error(100, "(#100) Provide either media_id or comment_id, not both")
        target = media or comment
        if target not in (self.media if media else self.comments):
            return unknown_object(str(target))
        self.likes.append(("media" if media else "comment", str(target)))
        return Answer(200, {"success": True})
