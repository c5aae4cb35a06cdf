"""What an email step sends, checked before anything is sent: the addresses (parsed one per
string, validated with email-validator), the extra headers (names by RFC 5322, no CR/LF or
other control characters in any value: header injection), the body, the Message-ID derived
from the step's idempotency key, and the size of the message."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

from flowyard.domain.errors import PermanentError

#: The default cap on a message (its MIME bytes over SMTP, its JSON payload to SendGrid).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
#: At most this many recipients (to + cc + bcc) per message: SendGrid's limit per request.
MAX_RECIPIENTS = 1000
#: A header name (RFC 5322 field-name: printable ASCII but the colon), bounded.
HEADER_NAME_PATTERN = r"^[!-9;-~]{1,76}$"
_HEADER_NAME = re.compile(HEADER_NAME_PATTERN)
#: Header names the node writes itself from its own fields, or that providers reserve
#: (SendGrid refuses these in ``headers``): set through the config's fields instead.
RESERVED_HEADERS = frozenset(
    {
        "bcc",
        "cc",
        "content-transfer-encoding",
        "content-type",
        "date",
        "dkim-signature",
        "from",
        "message-id",
        "mime-version",
        "received",
        "reply-to",
        "return-path",
        "sender",
        "subject",
        "to",
        "x-sg-eid",
        "x-sg-id",
    }
)
#: Control characters refused in header values, subjects and addresses: CR and LF would
#: start a header of the sender's choosing (``Bcc:``); NUL and the others have no place there.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: One mailbox per string: ``addr`` or ``Display Name <addr>`` (the name may be quoted).
_MAILBOX = re.compile(r"^\s*(?:(?P<name>[^<>]*?)\s*<(?P<angle>[^<>]*)>|(?P<bare>[^<>]*?))\s*$")
_ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A checked address (its ASCII form: an internationalised domain as ``xn--``) and an
    optional display name."""

    address: str
    name: str | None = None

    @property
    def domain(self) -> str:
        """The part after the ``@``."""
        return self.address.rsplit("@", 1)[1]

    def header(self) -> str:
        """As written in a header (the display name quoted or encoded as needed)."""
        local, domain = self.address.rsplit("@", 1)
        return str(Address(display_name=self.name or "", username=local, domain=domain))

    def as_json(self) -> dict[str, str]:
        """SendGrid's ``{"email", "name"}``."""
        return {"email": self.address, "name": self.name} if self.name else {"email": self.address}


@dataclass(frozen=True, slots=True)
class Letter:
    """An email ready to send: every field rendered and checked."""

    sender: Mailbox
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    bcc: tuple[Mailbox, ...]
    reply_to: tuple[Mailbox, ...]
    subject: str
    text: str | None
    html: str | None
    headers: tuple[tuple[str, str], ...]
    message_id: str

    @property
    def recipients(self) -> list[str]:
        """The envelope's recipients: to, cc and bcc in that order."""
        return [m.address for m in (*self.to, *self.cc, *self.bcc)]


def message_id(idempotency_key: str, domain: str) -> str:
    """``<hash@domain>``: the same for every attempt of a step (its idempotency key is), so a
    receiver or a provider can recognise a resend."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def _invalid(field: str, value: Any, reason: str) -> PermanentError:
    shown = value[:320] if isinstance(value, str) else value
    return PermanentError(
        f"{field}: {shown!r} is not a valid email address: {reason}",
        error_type="email.invalid_address",
        details={"field": field, "address": shown, "reason": reason},
    )


def parse_mailbox(value: Any, field: str) -> Mailbox:
    """One address (``addr`` or ``Name <addr>``), validated (``email.invalid_address``)."""
    if not isinstance(value, str):
        raise _invalid(field, value, f"expected a string, got {type(value).__name__}")
    if _CONTROL.search(value):
        raise _invalid(field, value, "it contains a line break or another control character")
    match = _MAILBOX.match(value)
    if match is None:
        raise _invalid(field, value, "write one address per string: addr or Name <addr>")
    name = (match["name"] or "").strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    spec = match["angle"] if match["angle"] is not None else match["bare"]
    try:
        checked = validate_email(spec.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise _invalid(field, value, str(exc)) from None
    return Mailbox(checked.ascii_email or checked.normalized, name or None)


def mailboxes(value: Any, field: str) -> tuple[Mailbox, ...]:
    """A string (one address) or a list of them; None or empty: none."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(
        parse_mailbox(item, f"{field}/{i}" if len(items) > 1 else field)
        for i, item in enumerate(items)
    )


def _text(value: Any, field: str) -> str | None:
    """A rendered body or subject as text (numbers and booleans as written; None and the
    empty string: absent)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return str(value)
    raise PermanentError(
        f"{field} rendered to {type(value).__name__}, not text",
        error_type="email.invalid_field",
        details={"field": field},
    )


def _header_problem(name: str, value: str, reason: str) -> PermanentError:
    return PermanentError(
        f"header {name[:80]!r}: {reason}",
        error_type="email.invalid_header",
        details={"header": name[:80], "reason": reason},
    )


def check_header_name(name: Any) -> str:
    """A header name the config may set (``email.invalid_header`` otherwise)."""
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise _header_problem(str(name), "", "a header name is printable ASCII without ':'")
    if name.lower() in RESERVED_HEADERS:
        raise _header_problem(name, "", "set by the node from its own fields; use them")
    return name


def _headers(rendered: Mapping[Any, Any]) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for name, value in rendered.items():
        checked = check_header_name(name)
        text = value if isinstance(value, str) else _text(value, f"headers/{checked}") or ""
        if _CONTROL.search(text):
            raise _header_problem(
                checked, text, "a header value may not contain CR, LF or control characters"
            )
        found.append((checked, text))
    return tuple(found)


def compose(rendered: Mapping[str, Any], idempotency_key: str) -> Letter:
    """The letter of a step from its rendered config fields (``from``, ``to``, ``cc``,
    ``bcc``, ``reply_to``, ``subject``, ``text``, ``html``, ``headers``). Duplicate recipients
    are dropped (the first kept, so an address in both to and bcc stays visible)."""
    senders = mailboxes(rendered.get("from"), "from")
    if len(senders) != 1:
        raise _invalid("from", rendered.get("from"), "give exactly one sender")
    lists: dict[str, tuple[Mailbox, ...]] = {
        f: mailboxes(rendered.get(f), f) for f in _ADDRESS_FIELDS
    }
    seen: set[str] = set()
    for field in ("to", "cc", "bcc"):
        kept = []
        for mailbox in lists[field]:
            if mailbox.address.lower() not in seen:
                seen.add(mailbox.address.lower())
                kept.append(mailbox)
        lists[field] = tuple(kept)
    if not lists["to"]:
        raise _invalid("to", rendered.get("to"), "at least one recipient is needed")
    if len(seen) > MAX_RECIPIENTS:
        raise PermanentError(
            f"{len(seen)} recipients: at most {MAX_RECIPIENTS} per message",
            error_type="email.too_many_recipients",
            details={"recipients": len(seen), "max": MAX_RECIPIENTS},
        )
    subject = _text(rendered.get("subject"), "subject") or ""
    if _CONTROL.search(subject):
        raise _header_problem("Subject", subject, "a subject may not contain CR, LF or controls")
    text = _text(rendered.get("text"), "text")
    html = _text(rendered.get("html"), "html")
    if text is None and html is None:
        raise PermanentError(
            "both text and html rendered empty: a message needs a body",
            error_type="email.empty_body",
        )
    headers = _headers(rendered.get("headers") or {})
    return Letter(
        senders[0],
        lists["to"],
        lists["cc"],
        lists["bcc"],
        lists["reply_to"],
        subject,
        text,
        html,
        headers,
        message_id(idempotency_key, senders[0].domain),
    )


def mime(letter: Letter, now: datetime) -> bytes:
    """The MIME message (CRLF line ends, non-ASCII headers encoded): text, html, or both as
    ``multipart/alternative``. Bcc recipients are in the envelope only, never in a header."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = letter.sender.header()
    msg["To"] = ", ".join(m.header() for m in letter.to)
    if letter.cc:
        msg["Cc"] = ", ".join(m.header() for m in letter.cc)
    if letter.reply_to:
        msg["Reply-To"] = ", ".join(m.header() for m in letter.reply_to)
    msg["Subject"] = letter.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = letter.message_id
    for name, value in letter.headers:
        msg[name] = value
    if letter.text is not None:
        msg.set_content(letter.text)
        if letter.html is not None:
            msg.add_alternative(letter.html, subtype="html")
    else:
        msg.set_content(letter.html or "", subtype="html")
    return msg.as_bytes()


def check_size(size: int, limit: int) -> None:
    """``email.too_large`` (permanent) past ``limit`` bytes."""
    if size > limit:
        raise PermanentError(
            f"the message is {size} bytes, more than the {limit} allowed",
            error_type="email.too_large",
            details={"bytes": size, "max_bytes": limit},
        )
