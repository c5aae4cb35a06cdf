"""A local Twilio: the Messages API of the 2010-04-01 REST API.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded, HTTP basic auth with
the account SID and auth token, or an API key SID and its secret. Answers as Twilio does:
201 with the Message resource; errors as ``{"code", "message", "more_info", "status"}``
(https://www.twilio.com/docs/usage/twilios-response), e.g. 401/20003 for bad credentials,
400/21211 for an invalid 'To' number, 400/21610 for a recipient who replied STOP, 400/21408
for a region not enabled, 429/20429 (``Retry-After``) when scripted.

A WhatsApp message outside the 24-hour window (63016) is reported by Twilio asynchronously
(the message fails later, its ``error_code`` says so): script it with
``fail_next(twilio_error(63016, ...))`` to test a synchronous refusal.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from fakes.fakehttp import Answer, FakeServer, Request

MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


def twilio_error(
    code: int, message: str, status: int = 400, headers: dict[str, str] | None = None
) -> Answer:
    """Twilio's JSON error body for ``code``."""
    return Answer(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        headers=headers or {},
    )


def too_many_requests(retry_after_s: int = 30) -> Answer:
    """429 / 20429 with ``Retry-After``."""
    return twilio_error(
        20429,
        "Too many requests. Please retry according to the Retry-After response header.",
        status=429,
        headers={"Retry-After": str(retry_after_s)},
    )


@dataclass
class FakeTwilio(FakeServer):
    """Accounts by SID (their auth tokens) and API keys (their account and secret)."""

    accounts: dict[str, str] = field(default_factory=dict)
    api_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Recipients who replied STOP (21610); country prefixes not enabled (21408).
    unsubscribed: set[str] = field(default_factory=set)
    disabled_prefixes: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def handle(self, request: Request) -> Answer:
        match = MESSAGES.match(request.path)
        if match is None:
            return twilio_error(20404, f"The requested resource {request.path} was not found", 404)
        if request.method != "POST":
            return twilio_error(20004, "Method not allowed", 405)
        account = match["account"]
        if not self._authorized(request, account):
            answer = twilio_error(20003, "Authenticate", 401)
            answer.body["detail"] = "Your AccountSid or AuthToken was incorrect."
            answer.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return answer
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return twilio_error(20001, "Invalid Content-Type", 400)
        return self._create(account, request.form())

    def _authorized(self, request: Request, account: str) -> bool:
        pair = request.basic_auth()
        if pair is None:
            return False
        user, secret = pair
        if user == account:
            return self.accounts.get(account) == secret
        return self.api_keys.get(user) == (account, secret)

    def _create(self, account: str, form: dict[str, list[str]]) -> Answer:
        def one(name: str) -> str | None:
            values = form.get(name)
            return values[0] if values else None

        to, sender, service = one("To"), one("From"), one("MessagingServiceSid")
        body, media = one("Body"), form.get("MediaUrl", [])
        if not to:
            return twilio_error(21604, "A 'To' phone number is required.")
        if not sender and not service:
            return twilio_error(21603, "A 'From' phone number is required.")
        if not body and not media:
            return twilio_error(21602, "Message body is required.")
        number = to.removeprefix("whatsapp:")
        if not E164.match(number):
            return twilio_error(21211, f"Invalid 'To' Phone Number: {to}")
        if number in self.unsubscribed:
            return twilio_error(21610, "Attempt to send to unsubscribed recipient")
        if any(number.startswith(prefix) for prefix in self.disabled_prefixes):
            return twilio_error(
                21408,
                "Permission to send an SMS has not been enabled for the region indicated by "
                f"the 'To' number: {number}",
            )
        sid = "SM" + uuid.uuid4().hex
        now = formatdate(usegmt=True)
        message = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": body or "",
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": str(max(1, math.ceil(len(body or "") / 160))),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if sender else "accepted",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"
            },
            "to": to,
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }
        self.sent.append({**message, "media_url": media, "status_callback": one("StatusCallback")})
        return Answer(201, message)
