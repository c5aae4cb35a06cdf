"""The ``instagram`` node type: Instagram messaging and comment moderation through the Meta
Graph API, with a ``meta_graph`` credential (access token, Instagram professional account
ID, API version, base URL).

Operations (``POST {base_url}/{api_version}/...``, JSON bodies, ``Authorization: Bearer``):

- ``send_message``: ``/{account_id}/messages`` ``{"recipient": {"id"}, "message": {"text"}}``
  (Instagram Messaging; the person must have messaged the account in the last 24 hours);
- ``reply_to_comment``: ``/{comment_id}/replies`` ``{"message"}``;
- ``hide_comment``: ``/{comment_id}`` ``{"hide": true|false}``;
- ``like``: ``/{account_id}/likes`` ``{"media_id"}`` or ``{"comment_id"}`` (the "User Likes"
  edge of the Instagram Graph API, permission ``instagram_manage_engagement``; Meta locks the
  account out for an hour after more than 50 likes in 5 seconds).

Failures are Graph's ``{"error": {"message", "type", "code", "error_subcode",
"is_transient", "fbtrace_id"}}``. The Graph API takes no idempotency key: a retry after a
timeout or a transient error may send a message twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal, assert_never

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowyard.domain.credentials import NAME_PATTERN, CredentialType
from flowyard.domain.errors import NodeError, PermanentError, TransientError
from flowyard.integrations.credentialed import (
    BearerTokenAuth,
    ProviderNode,
    endpoint,
    invalid_response,
    json_bytes,
    post,
    provider_credential,
    rate_limit_details,
    refused,
    retry_after,
    status_failure,
)
from flowyard.nodes.base import NodeConfig, NodeOutcome, StepContext
from flowyard.nodes.httpio import Exchange
from flowyard.outbound import Authenticator

PREFIX = "instagram"
#: Graph object IDs (users, Instagram-scoped user IDs, media, comments) are numeric; checking
#: it keeps a rendered value from naming another edge (``me/feed``) of the same API.
GRAPH_ID = re.compile(r"^[0-9]{1,32}$")
#: Rate limits (4 application, 17 user, 32 page, 613 calls within a window, 80002 Instagram
#: business use case), 1/2 Graph's temporary service errors, 1200 a temporary send failure.
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 613, 1200, 80002})
#: Those of them that are rate limits (they pause the credential's quota bucket).
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80002})
#: Code 10 with this subcode: "This message is sent outside of allowed window" (the
#: 24-hour messaging window). Permanent like every code 10 (permission) error; named here
#: because workflows route on it (``instagram.10_2018278``).
OUTSIDE_WINDOW = 2018278

Operation = Literal["send_message", "reply_to_comment", "like", "hide_comment"]
#: The fields each operation needs (``like``: one of ``media_id``/``comment_id``).
NEEDS: Mapping[str, tuple[str, ...]] = {
    "send_message": ("recipient_id", "text"),
    "reply_to_comment": ("comment_id", "text"),
    "hide_comment": ("comment_id",),
    "like": (),
}
OPTIONAL = ("recipient_id", "text", "comment_id", "media_id")


class InstagramConfig(NodeConfig):
    """One Instagram operation; every string may be a template."""

    credential: str = Field(
        pattern=NAME_PATTERN,
        description="Name of a meta_graph credential (access token, account_id of the "
        "Instagram professional account, api_version, base_url).",
    )
    operation: Operation = Field(
        description="send_message (recipient_id, text), reply_to_comment (comment_id, text), "
        "like (media_id or comment_id), hide_comment (comment_id, hide)."
    )
    recipient_id: str | None = Field(
        None, max_length=2048, description="The Instagram-scoped ID of the person (IGSID)."
    )
    text: str | None = Field(None, description="The message or the reply's text.")
    comment_id: str | None = Field(None, max_length=2048, description="An Instagram comment ID.")
    media_id: str | None = Field(None, max_length=2048, description="An Instagram media ID.")
    hide: bool = Field(True, description="hide_comment: true hides, false shows it again.")
    timeout_s: float = Field(30.0, gt=0, le=300, description="Deadline of the whole exchange.")

    @model_validator(mode="after")
    def _fields_of_operation(self) -> InstagramConfig:
        needed = NEEDS[self.operation]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.operation} needs {', '.join(missing)}")
        used = set(needed)
        if self.operation == "like":
            if (self.media_id is None) == (self.comment_id is None):
                raise ValueError("like needs exactly one of media_id or comment_id")
            used = {"media_id", "comment_id"}
        extra = [name for name in OPTIONAL if getattr(self, name) is not None and name not in used]
        if extra:
            raise ValueError(f"{self.operation} does not use {', '.join(extra)}")
        return self


class InstagramOutput(BaseModel):
    """What an instagram step stores."""

    model_config = ConfigDict(extra="ignore")

    operation: str = Field(description="The operation performed.")
    id: str | None = Field(
        None, description="send_message: the message ID; reply_to_comment: the reply's ID."
    )
    recipient_id: str | None = Field(None, description="send_message: the recipient.")
    success: bool = Field(description="True (a failure fails the step).")


class InstagramNode(ProviderNode[InstagramConfig]):
    """Send an Instagram direct message, reply to a comment, hide or show a comment, or like
    a media or comment; output ``{operation, id, recipient_id, success}``.

    Errors are ``instagram.<code>`` or ``instagram.<code>_<subcode>`` from Graph's error
    body (``details``: ``status``, ``code``, ``subcode``, ``type``, ``message``,
    ``fbtrace_id``):

    - transient: codes 4, 17, 32, 613, 80002 (rate limits; ``Retry-After`` or the
      ``X-Business-Use-Case-Usage`` estimate honoured), 1, 2, 1200 (temporary failures),
      any error Graph marks ``is_transient``, and HTTP 429/5xx;
    - permanent: every other, e.g. ``instagram.190`` (invalid or expired token),
      ``instagram.10`` / ``instagram.200`` (permission), ``instagram.100`` (invalid
      parameter, unknown object), ``instagram.10_2018278`` (outside the 24-hour messaging
      window), ``instagram.551`` (the person cannot receive messages);
    - ``instagram.<status>`` for an error answer without Graph's body (transient for 408,
      429, 5xx); ``instagram.invalid_response`` (permanent) for a success answer that is not
      Graph's; ``instagram.invalid_config`` (permanent, nothing sent) for a rendered ID that
      is not numeric;
    - ``instagram.timeout``, ``instagram.network`` (transient),
      ``instagram.response_too_large``; ``credential.type``,
      ``credential.origin_not_allowed`` as for every provider.
    """

    type_name = "instagram"
    config_model = InstagramConfig
    template_fields = tuple(f"/{name}" for name in OPTIONAL)
    output_model = InstagramOutput
    description = (
        "Instagram through the Meta Graph API: send_message, reply_to_comment, like, "
        "hide_comment. Output: {operation, id, recipient_id, success}."
    )

    def authenticators(self) -> Mapping[CredentialType, Authenticator]:
        """Bearer auth for ``meta_graph`` credentials (the access token)."""
        return {CredentialType.META_GRAPH: BearerTokenAuth("access_token")}

    async def execute(self, ctx: StepContext, config: InstagramConfig) -> NodeOutcome:
        """Render the operation's fields, send it, classify the answer."""
        info = await provider_credential(
            ctx, config.credential, CredentialType.META_GRAPH, node_type=self.type_name
        )
        rendered = await ctx.render({name: getattr(config, name) for name in OPTIONAL})
        path, payload = _request(config, rendered, str(info["account_id"]))
        done = await post(
            ctx,
            endpoint(str(info["base_url"]), str(info["api_version"]), *path),
            prefix=PREFIX,
            credential=config.credential,
            timeout_s=config.timeout_s,
            content=json_bytes(payload),
            content_type="application/json",
        )
        body = done.body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            raise _error(ctx, done, body["error"])
        if not done.response.is_success:
            raise await status_failure(ctx, done, PREFIX, "the Graph API")
        output = _output(config.operation, body)
        if output is None:
            raise await invalid_response(ctx, done, PREFIX, "the Graph API")
        return NodeOutcome(output=output)


def _request(
    config: InstagramConfig, rendered: Mapping[str, Any], account: str
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The path below the API version and the JSON body of ``config.operation``."""
    ids = {
        name: _graph_id(name, rendered[name])
        for name in ("recipient_id", "comment_id", "media_id")
        if rendered[name] is not None
    }
    text = None if rendered["text"] is None else str(rendered["text"])
    match config.operation:
        case "send_message":
            return (account, "messages"), {
                "recipient": {"id": ids["recipient_id"]},
                "message": {"text": text},
            }
        case "reply_to_comment":
            return (ids["comment_id"], "replies"), {"message": text}
        case "hide_comment":
            return (ids["comment_id"],), {"hide": config.hide}
        case "like":
            target = "media_id" if "media_id" in ids else "comment_id"
            return (account, "likes"), {target: ids[target]}
        case _:
            assert_never(config.operation)


def _graph_id(field: str, value: Any) -> str:
    text = str(value).strip()
    if not GRAPH_ID.match(text):
        raise refused(PREFIX, field, "not a Graph object ID (digits only)")
    return text


def _output(operation: str, body: Any) -> dict[str, Any] | None:
    """The step's output from a success answer; None when the body is not Graph's answer."""
    if not isinstance(body, dict):
        return None
    if operation == "send_message":
        message_id = body.get("message_id")
        if not isinstance(message_id, str):
            return None
        recipient = body.get("recipient_id")
        return {
            "operation": operation,
            "id": message_id,
            "recipient_id": None if recipient is None else str(recipient),
            "success": True,
        }
    if operation == "reply_to_comment":
        reply = body.get("id")
        if not isinstance(reply, str):
            return None
        return {"operation": operation, "id": reply, "recipient_id": None, "success": True}
    if body.get("success") is not True:
        return None
    return {"operation": operation, "id": None, "recipient_id": None, "success": True}


def _error(ctx: StepContext, done: Exchange, error: Mapping[str, Any]) -> NodeError:
    """Graph's ``error`` as ``instagram.<code>[_<subcode>]``."""
    code, subcode = _int(error.get("code")), _int(error.get("error_subcode"))
    if code is None:
        code = done.status
    error_type = f"{PREFIX}.{code}" + (f"_{subcode}" if subcode is not None else "")
    said = str(ctx.redact(str(error.get("message") or "")))[:1000]
    details = {
        "status": done.status,
        "code": code,
        "subcode": subcode,
        "type": _short(ctx, error.get("type")),
        "message": said,
        "fbtrace_id": _short(ctx, error.get("fbtrace_id")),
    }
    message = f"the Graph API answered {done.status} with error {code}" + (
        f" (subcode {subcode})" if subcode is not None else ""
    )
    if subcode == OUTSIDE_WINDOW:
        message += " (outside the 24-hour messaging window)"
    if said:
        message += f": {said}"
    transient = (
        code in TRANSIENT_CODES
        or error.get("is_transient") is True
        or done.status in (408, 429)
        or done.status >= 500
    )
    if transient and subcode != OUTSIDE_WINDOW:
        limited = code in RATE_LIMIT_CODES or done.status == 429
        return TransientError(
            message,
            error_type=error_type,
            details=rate_limit_details(details, limited),
            retry_after_s=_wait(done),
        )
    return PermanentError(message, error_type=error_type, details=details)


def _wait(done: Exchange) -> float | None:
    """Seconds until Graph lets the account in again: ``Retry-After``, else the largest
    ``estimated_time_to_regain_access`` (minutes) of ``X-Business-Use-Case-Usage``."""
    header = retry_after(done)
    if header is not None:
        return header
    raw = done.response.headers.get("x-business-use-case-usage")
    if not raw or len(raw) > 65536:
        return None
    try:
        usage = json.loads(raw)
    except ValueError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (usage.values() if isinstance(usage, dict) else ())
        if isinstance(entries, list)
        for entry in entries
        if isinstance(entry, dict)
    ]
    waits = [float(m) for m in minutes if isinstance(m, int | float) and not isinstance(m, bool)]
    longest = max(waits, default=0.0)
    return longest * 60 if longest > 0 else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        return int(value)
    return None


def _short(ctx: StepContext, value: Any) -> str | None:
    """A short field of Graph's error, redacted before it is cut."""
    return None if value is None else str(ctx.redact(str(value)))[:200]
