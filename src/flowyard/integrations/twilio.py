"""The ``sms`` and ``whatsapp`` node types: one message through Twilio's Messages API.

Wire protocol (Twilio REST, the 2010-04-01 API): ``POST {base_url}/2010-04-01/Accounts/
{AccountSid}/Messages.json``, form-encoded (``To``, ``From`` and/or ``MessagingServiceSid``,
``Body``, ``MediaUrl`` repeated, ``StatusCallback``), HTTP basic auth with the account SID (or
an API key SID) and the auth token (or the key's secret). The answer is the Message resource
(201); a failure is Twilio's JSON error ``{"code", "message", "more_info", "status"}``.

Twilio documents no idempotency key for creating a message (its error 20500 page: "sending
an SMS ... [is] not idempotent"), so none is sent: a retry after a timeout or a 5xx may send
the message twice (a 20429 was never processed and is always safe to retry).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from flowyard.domain.credentials import NAME_PATTERN, CredentialType, ResolvedCredential
from flowyard.domain.errors import NodeError, PermanentError, TransientError
from flowyard.integrations.credentialed import (
    ProviderNode,
    endpoint,
    invalid_response,
    post,
    provider_credential,
    rate_limit_details,
    refused,
    retry_after,
    status_failure,
)
from flowyard.nodes.base import NodeConfig, NodeOutcome, StepContext
from flowyard.nodes.httpio import Exchange
from flowyard.outbound import AuthContext, Authenticator

PREFIX = "twilio"
#: E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
#: An alphanumeric sender ID (SMS only, where the destination country allows it): up to 11
#: letters, digits and spaces, at least one letter.
ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
WHATSAPP = "whatsapp:"
#: Twilio accepts at most 10 media URLs per message.
MAX_MEDIA = 10

#: Codes a later attempt may get past. 20429: "an API request that receives an error 429
#: response is never processed and is always safe to retry"; 20500/20503: Twilio's own
#: server errors (a 5xx status is transient whatever its code).
TRANSIENT_CODES = frozenset({20429, 20500, 20503})
#: What the codes a workflow most often routes on mean (for the error message).
KNOWN_CODES: Mapping[int, str] = {
    20003: "authentication failed: check the account SID or API key SID and the auth token",
    20429: "too many concurrent requests",
    21211: "the 'To' number is not a valid phone number",
    21408: "sending to this region is not enabled on the account",
    21610: "the recipient has unsubscribed (replied STOP)",
    63016: "outside the WhatsApp 24-hour customer service window: send an approved template",
}


class TwilioAuth:
    """HTTP basic auth for a ``twilio`` credential: the API key SID (or the account SID)
    and the auth token (or the API key's secret). The encoded pair is redacted as well."""

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        """``authorization``."""
        return frozenset({"authorization"})

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> Mapping[str, str]:
        """The basic header."""
        values = credential.values
        user = values.get("api_key_sid") or values["account_sid"]
        pair = base64.b64encode(f"{user}:{values['auth_token']}".encode()).decode()
        ctx.remember(pair)
        return {"Authorization": f"Basic {pair}"}


class TwilioMessageConfig(NodeConfig):
    """One message; every string may be a template (rendered, then checked)."""

    credential: str = Field(
        pattern=NAME_PATTERN,
        description="Name of a twilio credential (account SID, auth token or API key, "
        "base_url). Its secrets never reach the step's output, errors or events.",
    )
    to: str = Field(
        min_length=1,
        max_length=2048,
        description="Recipient in E.164 (+14155550100) once rendered. For whatsapp the "
        "'whatsapp:' prefix is added (and may be written).",
    )
    from_: str | None = Field(
        None,
        alias="from",
        max_length=2048,
        description="Sender: a Twilio number in E.164 (sms: or an alphanumeric sender ID). "
        "Give 'from', 'messaging_service_sid' or both.",
    )
    messaging_service_sid: str | None = Field(
        None, max_length=2048, description="A Messaging Service (MG...) that picks the sender."
    )
    body: str | None = Field(None, description="The text (Twilio: at most 1,600 characters).")
    media_url: list[str] = Field(
        default_factory=list,
        max_length=MAX_MEDIA,
        description="Up to 10 public http(s) URLs of media Twilio fetches and attaches.",
    )
    status_callback: str | None = Field(
        None,
        max_length=2048,
        description="An http(s) URL Twilio calls as the message's status changes.",
    )
    timeout_s: float = Field(30.0, gt=0, le=300, description="Deadline of the whole exchange.")

    @model_validator(mode="after")
    def _sender_and_content(self) -> TwilioMessageConfig:
        if self.from_ is None and self.messaging_service_sid is None:
            raise ValueError("give 'from' or 'messaging_service_sid'")
        if self.body is None and not self.media_url:
            raise ValueError("give 'body' or 'media_url'")
        return self


#: The stored output. Built with ``create_model``: ``from`` is a Python keyword, and an
#: alias would be dumped under the field's own name.
_OUTPUT_FIELDS: dict[str, Any] = {
    "sid": (str, Field(description="The Message SID (SM... or MM...).")),
    "status": (str | None, Field(None, description="Twilio's status: queued, accepted, ...")),
    "to": (str | None, Field(None, description="The recipient as Twilio recorded it.")),
    "from": (str | None, Field(None, description="The sender (null until one is picked).")),
}
TwilioMessageOutput: type[BaseModel] = create_model(
    "TwilioMessageOutput", __config__=ConfigDict(extra="ignore"), **_OUTPUT_FIELDS
)


class TwilioMessageNode(ProviderNode[TwilioMessageConfig]):
    """Base of ``sms`` and ``whatsapp``: one message through Twilio's Messages API.

    Output ``{sid, status, to, from}``. Errors (``details``: ``status``, ``code``,
    ``message``, ``more_info``):

    - ``twilio.<code>`` from Twilio's error body: transient for 20429 (too many requests),
      20500/20503, HTTP 429 and 5xx (``Retry-After`` honoured); permanent otherwise, e.g.
      ``twilio.21211`` invalid number, ``twilio.21610`` unsubscribed (STOP),
      ``twilio.21408`` region not enabled, ``twilio.63016`` outside the WhatsApp 24-hour
      window, ``twilio.20003`` authentication;
    - ``twilio.<status>`` for an error answer without Twilio's body (transient for 408, 429,
      5xx); ``twilio.invalid_response`` (permanent) for a success answer that is not a
      Message resource;
    - ``twilio.invalid_number`` / ``twilio.invalid_config`` (permanent, nothing sent) for a
      rendered value that is not E.164 or not a valid SID or URL;
    - ``twilio.timeout``, ``twilio.network`` (transient), ``twilio.response_too_large``;
    - ``credential.type`` when the credential is not a ``twilio`` one,
      ``credential.origin_not_allowed`` when its base_url is not among its allowed origins.
    """

    config_model = TwilioMessageConfig
    template_fields = (
        "/to",
        "/from",
        "/messaging_service_sid",
        "/body",
        "/media_url",
        "/status_callback",
    )
    output_model = TwilioMessageOutput
    #: Whether To and From are WhatsApp addresses (``whatsapp:+1...``).
    whatsapp: ClassVar[bool] = False

    def authenticators(self) -> Mapping[CredentialType, Authenticator]:
        """Basic auth for ``twilio`` credentials."""
        return {CredentialType.TWILIO: TwilioAuth()}

    async def execute(self, ctx: StepContext, config: TwilioMessageConfig) -> NodeOutcome:
        """Render and check the message, send it, classify the answer."""
        info = await provider_credential(
            ctx, config.credential, CredentialType.TWILIO, node_type=self.type_name
        )
        rendered = await ctx.render(
            {
                "to": config.to,
                "from": config.from_,
                "messaging_service_sid": config.messaging_service_sid,
                "body": config.body,
                "media_url": list(config.media_url),
                "status_callback": config.status_callback,
            }
        )
        form = self.form(rendered)
        account = quote(str(info["account_sid"]), safe="")
        url = endpoint(str(info["base_url"]), "2010-04-01", "Accounts", account, "Messages.json")
        done = await post(
            ctx,
            url,
            prefix=PREFIX,
            credential=config.credential,
            timeout_s=config.timeout_s,
            content=urlencode(form).encode(),
            content_type="application/x-www-form-urlencoded",
        )
        if not done.response.is_success:
            raise await _error(ctx, done)
        body = done.body
        if not isinstance(body, dict) or not isinstance(body.get("sid"), str):
            raise await invalid_response(ctx, done, PREFIX, "Twilio")
        return NodeOutcome(
            output={
                "sid": body["sid"],
                "status": _text(body.get("status")),
                "to": _text(body.get("to")),
                "from": _text(body.get("from")),
            }
        )

    def form(self, rendered: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The request's form fields from the rendered config, each checked."""
        form = [("To", self.address("to", rendered["to"], sender=False))]
        if rendered["from"] is not None:
            form.append(("From", self.address("from", rendered["from"], sender=True)))
        if rendered["messaging_service_sid"] is not None:
            sid = str(rendered["messaging_service_sid"]).strip()
            if not MESSAGING_SERVICE_SID.match(sid):
                raise refused(PREFIX, "messaging_service_sid", "not a Messaging Service SID")
            form.append(("MessagingServiceSid", sid))
        if rendered["body"] is not None:
            form.append(("Body", str(rendered["body"])))
        for index, media in enumerate(rendered["media_url"]):
            form.append(("MediaUrl", _http_url(f"media_url/{index}", media)))
        if rendered["status_callback"] is not None:
            callback = _http_url("status_callback", rendered["status_callback"])
            form.append(("StatusCallback", callback))
        return form

    def address(self, field: str, value: Any, *, sender: bool) -> str:
        """A rendered phone number checked as E.164 (with ``whatsapp:`` for WhatsApp)."""
        text = str(value).strip()
        if self.whatsapp:
            text = text.removeprefix(WHATSAPP)
            if not E164.match(text):
                raise refused(PREFIX, field, "not an E.164 phone number", "invalid_number")
            return WHATSAPP + text
        if E164.match(text) or (sender and ALPHANUMERIC_SENDER.match(text)):
            return text
        what = "an E.164 phone number or alphanumeric sender ID" if sender else "an E.164 number"
        raise refused(PREFIX, field, f"not {what} (like +14155550100)", "invalid_number")


class SmsNode(TwilioMessageNode):
    """Send an SMS (or MMS with ``media_url``) through Twilio; see
    :class:`TwilioMessageNode` for the output and the error types."""

    type_name = "sms"
    description = "Sends an SMS through Twilio. Output: {sid, status, to, from}."


class WhatsAppNode(TwilioMessageNode):
    """Send a WhatsApp message through Twilio (``whatsapp:`` addresses); see
    :class:`TwilioMessageNode` for the output and the error types. A free-form message
    outside the 24-hour customer service window fails with ``twilio.63016``."""

    type_name = "whatsapp"
    description = "Sends a WhatsApp message through Twilio. Output: {sid, status, to, from}."
    whatsapp = True


async def _error(ctx: StepContext, done: Exchange) -> NodeError:
    """The error of a failure answer, from Twilio's error body when there is one."""
    body = done.body
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, str) and code.isdigit() and len(code) <= 12:
        code = int(code)
    if not isinstance(body, dict) or not isinstance(code, int) or isinstance(code, bool):
        return await status_failure(ctx, done, PREFIX, "Twilio")
    said = _short(ctx, body.get("message"))
    meaning = KNOWN_CODES.get(code)
    message = f"Twilio answered {done.status} with error {code}" + (
        f" ({meaning})" if meaning else ""
    )
    details = {
        "status": done.status,
        "code": code,
        "message": said,
        "more_info": _short(ctx, body.get("more_info")),
    }
    if said:
        message += f": {said}"
    if done.status in (408, 429) or done.status >= 500 or code in TRANSIENT_CODES:
        return TransientError(
            message,
            error_type=f"{PREFIX}.{code}",
            details=rate_limit_details(details, done.status == 429 or code == 20429),
            retry_after_s=retry_after(done),
        )
    return PermanentError(message, error_type=f"{PREFIX}.{code}", details=details)


def _short(ctx: StepContext, value: Any, limit: int = 1000) -> str | None:
    """A provider's text for an error, redacted before it is cut (see httpio.error_body)."""
    if value is None:
        return None
    return str(ctx.redact(str(value)))[:limit]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _http_url(field: str, value: Any) -> str:
    """A rendered absolute http(s) URL (what Twilio fetches or calls back)."""
    text = str(value).strip()
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise refused(PREFIX, field, "not an absolute http(s) URL")
    return text
