"""The ``slack`` node type: one message through Slack's Web API ``chat.postMessage``.

Wire protocol: ``POST {base_url}/api/chat.postMessage`` with a JSON body (``channel``,
``text``, ``blocks``, ``thread_ts``) and ``Authorization: Bearer <bot token>``. Slack answers
200 with ``{"ok": true, "channel", "ts", "message"}`` or ``{"ok": false, "error": "<code>"}``
(also for a bad token); a rate-limited call gets HTTP 429 with ``Retry-After``.

Slack takes no idempotency key for ``chat.postMessage``; a retry after a timeout or an
``internal_error``/``fatal_error`` ("it's possible some aspect of the operation succeeded")
may post twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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

PREFIX = "slack"
#: Slack's error codes a later call may get past: rate limits and Slack's own failures.
TRANSIENT_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
#: Slack's rate limits: HTTP 429 ``ratelimited`` (a method's tier), and chat.postMessage's
#: own ``rate_limited`` ("posted too many messages"), which comes with HTTP 200.
RATE_LIMITS = frozenset({"ratelimited", "rate_limited"})
#: What an error code looks like (anything else is not Slack's answer).
ERROR_CODE = re.compile(r"^[a-z0-9_]{1,100}$")
#: Slack refuses more blocks than this in one message.
MAX_BLOCKS = 50
#: A message's ``ts`` (also the ``thread_ts`` of a reply): seconds.microseconds.
TIMESTAMP = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}$")


class SlackConfig(NodeConfig):
    """One message; every string (inside ``blocks`` too) may be a template."""

    credential: str = Field(
        pattern=NAME_PATTERN,
        description="Name of a slack credential (a bot token, xoxb-...). Its token never "
        "reaches the step's output, errors or events.",
    )
    channel: str = Field(
        min_length=1, max_length=2048, description="A channel ID (C..., G..., D...) or name."
    )
    text: str | None = Field(
        None,
        description="The text (mrkdwn); with blocks, the notification's fallback. At most "
        "40,000 characters (msg_too_long).",
    )
    blocks: list[dict[str, Any]] | None = Field(
        None, max_length=MAX_BLOCKS, description="Block Kit blocks (at most 50)."
    )
    thread_ts: str | None = Field(
        None, max_length=2048, description="The ts of a message to reply to in its thread."
    )
    timeout_s: float = Field(30.0, gt=0, le=300, description="Deadline of the whole exchange.")

    @model_validator(mode="after")
    def _content(self) -> SlackConfig:
        if self.text is None and not self.blocks:
            raise ValueError("give 'text', 'blocks' or both")
        return self


class SlackOutput(BaseModel):
    """What a slack step stores: where the message went and its timestamp (its id)."""

    model_config = ConfigDict(extra="ignore")

    ts: str = Field(description="The message's timestamp: its id, and the thread_ts of replies.")
    channel: str = Field(description="The channel ID the message was posted to.")


class SlackNode(ProviderNode[SlackConfig]):
    """Post a message with ``chat.postMessage``; output ``{ts, channel}``.

    Errors are ``slack.<error>`` from Slack's ``{"ok": false, "error"}`` (``details``:
    ``status``, ``error``, ``response_metadata``):

    - transient: ``slack.ratelimited`` (HTTP 429, ``Retry-After`` honoured),
      ``slack.rate_limited``, ``slack.internal_error``, ``slack.fatal_error``,
      ``slack.service_unavailable``, ``slack.request_timeout``;
    - permanent: every other, e.g. ``slack.channel_not_found``, ``slack.not_in_channel``,
      ``slack.is_archived``, ``slack.invalid_auth``, ``slack.not_authed``,
      ``slack.msg_too_long``, ``slack.no_text``, ``slack.invalid_blocks``;
    - ``slack.<status>`` for an error answer without Slack's body (transient for 408, 429,
      5xx); ``slack.invalid_response`` (permanent) for a 200 that is not Slack's JSON;
      ``slack.invalid_config`` (permanent, nothing sent) for a rendered value refused;
    - ``slack.timeout``, ``slack.network`` (transient), ``slack.response_too_large``;
    - ``credential.type``, ``credential.origin_not_allowed`` as for every provider.
    """

    type_name = "slack"
    config_model = SlackConfig
    template_fields = ("/channel", "/text", "/blocks", "/thread_ts")
    output_model = SlackOutput
    description = "Posts a Slack message (chat.postMessage). Output: {ts, channel}."

    def authenticators(self) -> Mapping[CredentialType, Authenticator]:
        """Bearer auth for ``slack`` credentials (the bot token)."""
        return {CredentialType.SLACK: BearerTokenAuth("bot_token")}

    async def execute(self, ctx: StepContext, config: SlackConfig) -> NodeOutcome:
        """Render the message, post it, classify the answer."""
        info = await provider_credential(
            ctx, config.credential, CredentialType.SLACK, node_type=self.type_name
        )
        rendered = await ctx.render(
            {
                "channel": config.channel,
                "text": config.text,
                "blocks": config.blocks,
                "thread_ts": config.thread_ts,
            }
        )
        done = await post(
            ctx,
            endpoint(str(info["base_url"]), "api", "chat.postMessage"),
            prefix=PREFIX,
            credential=config.credential,
            timeout_s=config.timeout_s,
            content=json_bytes(_payload(rendered)),
            # Slack warns (missing_charset) about a JSON body without its charset.
            content_type="application/json; charset=utf-8",
        )
        body = done.body
        error = body.get("error") if isinstance(body, dict) else None
        if done.status == 200 and isinstance(body, dict) and body.get("ok") is True:
            ts, channel = body.get("ts"), body.get("channel")
            if isinstance(ts, str) and isinstance(channel, str):
                return NodeOutcome(output={"ts": ts, "channel": channel})
            raise await invalid_response(ctx, done, PREFIX, "Slack")
        if isinstance(error, str) and ERROR_CODE.match(error):
            raise _error(done, body, error)
        if done.status == 429:
            # Slack's rate limit, whatever the body says (a proxy may have replaced it).
            raise _error(done, {}, "ratelimited")
        if done.response.is_success:
            raise await invalid_response(ctx, done, PREFIX, "Slack")
        raise await status_failure(ctx, done, PREFIX, "Slack")


def _payload(rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body from the rendered config, each value checked."""
    channel = str(rendered["channel"]).strip()
    if not channel or len(channel) > 255:
        raise refused(PREFIX, "channel", "a channel ID or name of 1 to 255 characters")
    payload: dict[str, Any] = {"channel": channel}
    if rendered["text"] is not None:
        payload["text"] = str(rendered["text"])
    if rendered["blocks"] is not None:
        payload["blocks"] = rendered["blocks"]
    if rendered["thread_ts"] is not None:
        thread_ts = str(rendered["thread_ts"]).strip()
        if not TIMESTAMP.match(thread_ts):
            raise refused(PREFIX, "thread_ts", "not a message timestamp (like 1503435956.000247)")
        payload["thread_ts"] = thread_ts
    return payload


def _error(done: Exchange, body: dict[str, Any], error: str) -> NodeError:
    """Slack's ``error`` as ``slack.<error>``."""
    details: dict[str, Any] = {"status": done.status, "error": error}
    if isinstance(body.get("response_metadata"), dict):
        details["response_metadata"] = body["response_metadata"]
    message = f"Slack refused the message: {error}"
    if error in TRANSIENT_ERRORS or done.status == 429 or done.status >= 500:
        return TransientError(
            message,
            error_type=f"{PREFIX}.{error}",
            details=rate_limit_details(details, error in RATE_LIMITS or done.status == 429),
            retry_after_s=retry_after(done),
        )
    return PermanentError(message, error_type=f"{PREFIX}.{error}", details=details)
