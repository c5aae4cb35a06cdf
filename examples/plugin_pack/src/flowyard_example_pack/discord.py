"""The ``example.discord`` node type: post one message to a Discord channel as a bot.

Wire protocol (Discord REST API v10, "Create Message"): ``POST
{api_base}/channels/{channel_id}/messages`` with a JSON body and ``Authorization: Bot
<token>``. Discord answers 200 with the message object (``id``, ``channel_id``,
``timestamp``, ...), or an error body ``{"code": <int>, "message": "..."}`` (``errors`` too
for an invalid form body); a rate-limited call gets HTTP 429 with ``Retry-After`` and
``{"retry_after": <seconds>, "global": <bool>}``.

What a node type must do, and where this one does it:

- **config model** (:class:`DiscordConfig`): served as JSON Schema by ``GET
  /api/v1/node-types`` and checked when a workflow is saved; unknown keys are refused.
- **output model** (:class:`DiscordOutput`): what a step stores, bounded (ids and a time,
  never the message echoed back).
- **credentials**: the node never reads the bot token. It names an ``api_key_header``
  credential (header ``Authorization``, value ``Bot <token>``) and hands that name to
  flowyard's outbound layer, which attaches the header only to the origins the credential
  allows (an admin sets ``allowed_origins: ["https://discord.com"]``) and applies the
  egress policy to every request.
- **idempotency**: a retry of the same step sends the same ``nonce`` (derived from the
  step's idempotency key) with ``enforce_nonce``: Discord returns the message it already
  created instead of posting it twice (for a few minutes, which covers flowyard's default
  retries).
- **errors**: :class:`~flowyard.domain.errors.TransientError` for what may work later
  (rate limits, Discord's 5xx, timeouts, network), :class:`PermanentError` for what will
  not (unknown channel, missing permissions, invalid body, bad token), each with a stable
  ``error_type`` a workflow's ``catch`` can route on.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from flowyard.domain.credentials import NAME_PATTERN, CredentialType, ProviderUrl
from flowyard.domain.errors import NodeError, PermanentError, TransientError
from flowyard.nodes.base import NodeConfig, NodeOutcome, NodeType, StepContext
from flowyard.nodes.httpio import Exchange, error_body, exchange, parse_retry_after

#: The prefix of every error type of this node (``discord.timeout``, ``discord.50013``).
PREFIX = "discord"
DISCORD_API = "https://discord.com/api/v10"
#: Discord refuses longer message contents.
MAX_CONTENT = 2000
#: Discord's nonces are at most 25 characters.
NONCE_CHARS = 25
#: A message object is a few kilobytes; anything past this is not Discord's answer.
MAX_RESPONSE_BYTES = 256 * 1024
#: A Discord id ("snowflake"): a 64-bit integer written in decimal.
SNOWFLAKE = re.compile(r"^[0-9]{1,20}$")

Mention = Literal["users", "roles", "everyone"]


class DiscordConfig(NodeConfig):
    """One message; ``channel_id`` and ``content`` may be templates (``{{ input.x }}``),
    checked again once rendered."""

    credential: str = Field(
        pattern=NAME_PATTERN,
        description="Name of an api_key_header credential whose header is Authorization "
        "and whose value is 'Bot <token>', allowed for https://discord.com.",
    )
    channel_id: str = Field(
        min_length=1, max_length=512, description="The channel's id (a snowflake)."
    )
    content: str = Field(
        min_length=1,
        max_length=8192,
        description=f"The message (Markdown); at most {MAX_CONTENT} characters once rendered.",
    )
    mentions: list[Mention] = Field(
        default_factory=list,
        max_length=3,
        description="Which mentions in the content may notify people: none by default, so "
        "a rendered '@everyone' from run input pings nobody.",
    )
    api_base: ProviderUrl = Field(
        DISCORD_API,
        description="Discord's API root (a local fake in tests); the credential is sent "
        "only where its allowed_origins admit.",
    )
    timeout_s: float = Field(30.0, gt=0, le=120, description="Deadline of the whole exchange.")


class DiscordOutput(BaseModel):
    """What a step stores: which message was posted, where and when."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, Field(max_length=20)] = Field(description="The message's id.")
    channel_id: Annotated[str, Field(max_length=20)] = Field(description="Its channel's id.")
    timestamp: Annotated[str, Field(max_length=64)] = Field(
        description="When Discord created it (ISO 8601)."
    )


class DiscordNode(NodeType[DiscordConfig]):
    """Post a message to a Discord channel; output ``{id, channel_id, timestamp}``.

    Error types:

    - ``discord.rate_limited`` (HTTP 429; Discord's ``retry_after`` honoured),
      ``discord.<status>`` for 408 and 5xx, ``discord.timeout``, ``discord.network``:
      transient;
    - ``discord.<code>`` from Discord's error body, e.g. ``discord.10003`` (unknown
      channel), ``discord.50001`` (missing access), ``discord.50013`` (missing
      permissions), ``discord.50035`` (invalid form body): permanent;
    - ``discord.<status>`` for another error answer (``discord.401``: a bad token),
      ``discord.invalid_response`` (a 200 that is not a message), ``discord.invalid_config``
      (a rendered channel id or content Discord would refuse; nothing is sent),
      ``discord.response_too_large``: permanent;
    - ``credential.type`` (not an api_key_header credential sending ``Authorization``),
      ``credential.origin_not_allowed`` (``api_base`` outside its allowed origins):
      permanent, nothing sent.
    """

    type_name = "example.discord"
    config_model = DiscordConfig
    output_model = DiscordOutput
    description = "Posts a Discord message as a bot. Output: {id, channel_id, timestamp}."

    def credential_refs(self, config: DiscordConfig) -> list[tuple[str, str]]:
        """The credential, so saving a workflow checks it exists."""
        return [("/config/credential", config.credential)]

    def request_target_pointers(self, config: DiscordConfig) -> list[str]:
        """The fields that decide where the credentialed request goes: run-start vars may
        not steer the bot token to another channel's URL."""
        return ["/config/api_base", "/config/channel_id"]

    async def execute(self, ctx: StepContext, config: DiscordConfig) -> NodeOutcome:
        """Check the credential, render and check the message, post it, classify the
        answer."""
        await _check_credential(ctx, config.credential)
        rendered = await ctx.render({"channel_id": config.channel_id, "content": config.content})
        channel_id = str(rendered["channel_id"]).strip()
        content = str(rendered["content"])
        if not SNOWFLAKE.match(channel_id):
            raise _invalid_config("channel_id", "not a Discord id (digits only)")
        if not content.strip() or len(content) > MAX_CONTENT:
            raise _invalid_config("content", f"must be 1 to {MAX_CONTENT} characters")
        body = {
            "content": content,
            "nonce": nonce(ctx.idempotency_key),
            "enforce_nonce": True,
            "allowed_mentions": {"parse": list(config.mentions)},
        }
        try:
            request = ctx.http.build_request(
                "POST",
                f"{config.api_base.rstrip('/')}/channels/{channel_id}/messages",
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=config.timeout_s,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise _invalid_config("api_base", str(exc)) from exc
        done = await exchange(
            ctx,
            request,
            prefix=PREFIX,
            timeout_s=config.timeout_s,
            max_bytes=MAX_RESPONSE_BYTES,
            credential=config.credential,
        )
        if done.status == 200 and isinstance(done.body, dict):
            try:
                output = DiscordOutput.model_validate(done.body)
            except ValueError:
                pass
            else:
                return NodeOutcome(output=output.model_dump())
        raise await _failure(ctx, done)


def nonce(idempotency_key: str) -> str:
    """The message's nonce: the same for every attempt of one step (its idempotency key is),
    distinct across steps, within Discord's 25 characters."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:NONCE_CHARS]


async def _check_credential(ctx: StepContext, name: str) -> None:
    """Refuse (before sending anything) a credential that is not a Discord bot header: a
    bearer token for another API would otherwise go wherever ``api_base`` says."""
    kind = await ctx.credential_type(name)
    header = (await ctx.credential_info(name)).get("header")
    if kind is not CredentialType.API_KEY_HEADER or str(header).lower() != "authorization":
        raise PermanentError(
            f"the {DiscordNode.type_name} node takes an api_key_header credential sending "
            f"Authorization: Bot <token>; {name!r} is of type {kind.value}"
            + (f" with header {header}" if header else ""),
            error_type="credential.type",
            details={"credential": name, "type": kind.value, "expected": "api_key_header"},
        )


def _invalid_config(field: str, message: str) -> PermanentError:
    return PermanentError(
        f"{field}: {message}", error_type=f"{PREFIX}.invalid_config", details={"field": field}
    )


async def _failure(ctx: StepContext, done: Exchange) -> NodeError:
    """The error of an answer that is not a message: Discord's ``code`` when it gave one."""
    status = done.status
    body = done.body if isinstance(done.body, dict) else {}
    details: dict[str, Any] = {"status": status}
    if status == 429:
        retry_after = body.get("retry_after")
        details["global"] = bool(body.get("global"))
        return TransientError(
            "Discord rate-limited the request",
            error_type=f"{PREFIX}.rate_limited",
            details=details,
            retry_after_s=(
                float(retry_after)
                if isinstance(retry_after, int | float) and 0 <= retry_after <= 86_400
                else parse_retry_after(done.response.headers.get("retry-after"))
            ),
        )
    code, message = body.get("code"), body.get("message")
    if isinstance(message, str):
        details["message"] = message[:500]
    if status == 408 or status >= 500:
        details["body"] = await error_body(ctx, done.raw, done.body)
        return TransientError(
            f"Discord answered {status}", error_type=f"{PREFIX}.{status}", details=details
        )
    if status == 200:
        details["body"] = await error_body(ctx, done.raw, done.body)
        # Discord may have posted it: a retry within the nonce's window would return the
        # same message, but after it would post again, so this is not retried.
        return PermanentError(
            "Discord answered 200 with a body that is not a message",
            error_type=f"{PREFIX}.invalid_response",
            details=details,
        )
    if isinstance(code, int) and not isinstance(code, bool) and 0 < code < 10**7:
        details["code"] = code
        return PermanentError(
            f"Discord refused the message: {message or code}",
            error_type=f"{PREFIX}.{code}",
            details=details,
        )
    details["body"] = await error_body(ctx, done.raw, done.body)
    return PermanentError(
        f"Discord answered {status}", error_type=f"{PREFIX}.{status}", details=details
    )
