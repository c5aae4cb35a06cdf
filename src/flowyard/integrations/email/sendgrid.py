"""The SendGrid transport: v3 ``POST {base_url}/v3/mail/send`` with the API key as a bearer
token, attached by the outbound layer (:class:`SendgridAuth`) to the credential's origins.

SendGrid answers 202 with an empty body and an ``X-Message-Id`` header. Errors carry
``{"errors": [{"message", "field", "help"}]}``: 429 (with ``Retry-After``) and 5xx are
transient (``Retry-After``, else ``X-RateLimit-Reset``, sets the retry's earliest time),
400/401/403/413 and other 4xx permanent; the error list is kept in the details.

SendGrid takes no idempotency key. The message carries the step's Message-ID in the header
``X-Flowyard-Message-Id`` and in ``custom_args`` (``flowyard_message_id``, echoed in every
Event Webhook event), so a resend after a lost reply can be recognised provider-side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx

from flowyard.domain.credentials import ResolvedCredential
from flowyard.domain.errors import PermanentError, TransientError
from flowyard.integrations.credentialed import rate_limit_details
from flowyard.integrations.email.message import Letter, check_size
from flowyard.nodes.base import StepContext
from flowyard.nodes.httpio import error_body, exchange, parse_retry_after
from flowyard.outbound import AuthContext

#: The header and custom argument that carry the step's Message-ID.
MESSAGE_ID_HEADER = "X-Flowyard-Message-Id"
MESSAGE_ID_ARG = "flowyard_message_id"
#: SendGrid's answers are small (an empty 202, an error list): more is not its answer.
MAX_RESPONSE_BYTES = 1024 * 1024


class SendgridAuth:
    """``Authorization: Bearer <api_key>`` for ``sendgrid`` credentials."""

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        """``authorization``."""
        return frozenset({"authorization"})

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> Mapping[str, str]:
        """The bearer header."""
        return {"Authorization": f"Bearer {credential.values['api_key']}"}


@dataclass(frozen=True, slots=True)
class SendgridResult:
    """A queued message: SendGrid's id for the request (``X-Message-Id``)."""

    provider_message_id: str | None


def payload(letter: Letter) -> dict[str, Any]:
    """The v3 mail/send body of ``letter`` (one personalization; text before html, as
    SendGrid requires)."""
    personalization: dict[str, Any] = {"to": [m.as_json() for m in letter.to]}
    if letter.cc:
        personalization["cc"] = [m.as_json() for m in letter.cc]
    if letter.bcc:
        personalization["bcc"] = [m.as_json() for m in letter.bcc]
    content = []
    if letter.text is not None:
        content.append({"type": "text/plain", "value": letter.text})
    if letter.html is not None:
        content.append({"type": "text/html", "value": letter.html})
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": letter.sender.as_json(),
        "subject": letter.subject,
        "content": content,
        "headers": {**dict(letter.headers), MESSAGE_ID_HEADER: letter.message_id},
        "custom_args": {MESSAGE_ID_ARG: letter.message_id},
    }
    if len(letter.reply_to) == 1:
        body["reply_to"] = letter.reply_to[0].as_json()
    elif letter.reply_to:
        body["reply_to_list"] = [m.as_json() for m in letter.reply_to]
    return body


def encode(letter: Letter, max_bytes: int) -> bytes:
    """The JSON payload, refused past ``max_bytes`` (``email.too_large``)."""
    data = json.dumps(payload(letter), ensure_ascii=False).encode()
    check_size(len(data), max_bytes)
    return data


async def send_sendgrid(
    ctx: StepContext,
    credential: ResolvedCredential,
    content: bytes,
    *,
    timeout_s: float,
) -> SendgridResult:
    """POST the payload; classify SendGrid's answer."""
    base = str(credential.public_values.get("base_url") or "https://api.sendgrid.com")
    url = base.rstrip("/") + "/v3/mail/send"
    request = ctx.http.build_request(
        "POST",
        url,
        content=content,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=timeout_s,
    )
    done = await exchange(
        ctx,
        request,
        prefix="email",
        timeout_s=timeout_s,
        max_bytes=MAX_RESPONSE_BYTES,
        credential=credential.name,
    )
    if not done.response.is_success:
        _fail(done.response, await error_body(ctx, done.raw, done.body))
    return SendgridResult(done.response.headers.get("x-message-id"))


def _retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After``, else SendGrid's ``X-RateLimit-Reset`` (a Unix time)."""
    found = parse_retry_after(headers.get("retry-after"))
    if found is not None:
        return found
    reset = headers.get("x-ratelimit-reset", "")
    if reset.isascii() and reset.isdigit():
        return max(0.0, float(reset) - time.time())
    return None


def _fail(response: httpx.Response, body: Any) -> NoReturn:
    status = response.status_code
    errors = body.get("errors") if isinstance(body, dict) else None
    details: dict[str, Any] = {"status": status}
    if isinstance(errors, list):
        details["errors"] = errors
    else:
        details["body"] = body
    first = errors[0] if isinstance(errors, list) and errors else None
    said = first.get("message") if isinstance(first, dict) else None
    message = f"SendGrid answered {status}" + (f": {said}" if isinstance(said, str) else "")
    error_type = f"email.sendgrid_{status}"
    if status == 429 or status >= 500:
        raise TransientError(
            message,
            error_type=error_type,
            details=rate_limit_details(details, status == 429),
            retry_after_s=_retry_after(response.headers),
        )
    raise PermanentError(message, error_type=error_type, details=details)
