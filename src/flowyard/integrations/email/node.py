"""The ``email`` node type: its config and output models and the step that renders, checks
and sends one message through the transport its credential names (SMTP or SendGrid)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flowyard.domain.credentials import NAME_PATTERN, CredentialType, ResolvedCredential
from flowyard.domain.errors import PermanentError
from flowyard.integrations.credentialed import ProviderNode
from flowyard.integrations.email import sendgrid, smtp
from flowyard.integrations.email.message import (
    MAX_MESSAGE_BYTES,
    Letter,
    check_header_name,
    check_size,
    compose,
    mime,
)
from flowyard.nodes.base import NodeConfig, NodeOutcome, StepContext
from flowyard.outbound import Authenticator

#: Bodies larger than this are encoded in a thread (MIME and JSON of megabytes take a while).
OFF_LOOP_CHARS = 64 * 1024
TRANSPORTS = {CredentialType.SMTP: "smtp", CredentialType.SENDGRID: "sendgrid"}

Recipients = str | list[str]
_TEMPLATED = "A template may render it, or render to a list."


class EmailConfig(NodeConfig):
    """One message; every string may be a template (``{{ input.email }}``). An address is
    ``addr`` or ``Name <addr>``, one per string; a recipient field takes a string or a list."""

    credential: str = Field(
        pattern=NAME_PATTERN,
        description="An smtp credential (its relay) or a sendgrid credential (its API key).",
    )
    sender: str = Field(alias="from", min_length=1, description="The sender: one address.")
    to: Recipients = Field(description=f"Recipients (at least one). {_TEMPLATED}")
    cc: Recipients = Field(default_factory=list, description=f"Copy. {_TEMPLATED}")
    bcc: Recipients = Field(
        default_factory=list,
        description=f"Blind copy: in the envelope only, never in a header. {_TEMPLATED}",
    )
    reply_to: Recipients = Field(default_factory=list, description="Reply-To address(es).")
    subject: str = Field("", max_length=100_000)
    text: str | None = Field(None, description="The plain-text body.")
    html: str | None = Field(None, description="The HTML body (with text: both, as alternatives).")
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=50,
        description="Extra headers (X-Campaign, List-Unsubscribe, ...); From, To, Subject, "
        "Message-ID and the like come from the fields above.",
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Deadline for the whole send: resolving, connecting, TLS, every command "
        "(email.timeout, transient, when it passes).",
    )
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES,
        ge=1024,
        le=MAX_MESSAGE_BYTES,
        description="Largest message sent (MIME over SMTP, JSON to SendGrid): email.too_large.",
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if "{{" in name or "{%" in name:
                continue  # checked once rendered
            try:
                check_header_name(name)
            except PermanentError as exc:
                raise ValueError(exc.message) from None
        return headers

    @model_validator(mode="after")
    def _a_body(self) -> EmailConfig:
        if not self.text and not self.html:
            raise ValueError("give text, html or both")
        if self.to == [] or self.to == "":
            raise ValueError("give at least one recipient in 'to'")
        return self


class EmailOutput(BaseModel):
    """What an email step stores."""

    model_config = ConfigDict(extra="ignore")

    message_id: str = Field(description="The Message-ID, the same on every attempt.")
    transport: Literal["smtp", "sendgrid"]
    accepted: list[str] = Field(description="Recipients the relay or provider accepted.")
    refused: dict[str, dict[str, Any]] = Field(
        description="Recipients an SMTP relay refused while accepting others: "
        "address -> {code, message}."
    )
    provider_message_id: str | None = Field(
        None, description="SendGrid's X-Message-Id (for its Event Webhook and Activity feed)."
    )


class EmailNode(ProviderNode[EmailConfig]):
    """Send an email through an SMTP relay (``smtp`` credential) or SendGrid (``sendgrid``).

    Output ``{message_id, transport, accepted, refused, provider_message_id}``. The
    Message-ID is ``<hash-of-idempotency-key@sender-domain>``: stable across retries.

    Error types. Permanent: ``credential.type`` (another credential type),
    ``credential.origin_not_allowed``, ``egress.denied``, ``email.invalid_address``,
    ``email.invalid_header`` (a bad name, or CR/LF in a value: header injection),
    ``email.invalid_field``, ``email.empty_body``, ``email.too_many_recipients``,
    ``email.too_large``, ``email.insecure`` (a password over a connection in clear),
    ``email.tls`` (an untrusted certificate), ``email.smtp_unsupported`` (no STARTTLS or
    AUTH), ``email.smtp_protocol`` (an answer that is not SMTP), ``email.smtp_<5xx>``,
    ``email.recipients_refused`` (every recipient refused; ``details.refused``),
    ``email.sendgrid_<4xx>`` (SendGrid's ``errors`` in the details),
    ``email.response_too_large``. Transient: ``email.smtp_<4xx>``, ``email.network``,
    ``email.timeout``, ``email.sendgrid_429`` (its Retry-After honoured),
    ``email.sendgrid_<5xx>``.
    """

    type_name = "email"
    config_model = EmailConfig
    template_fields = (
        "/from",
        "/to",
        "/cc",
        "/bcc",
        "/reply_to",
        "/subject",
        "/text",
        "/html",
        "/headers",
    )
    output_model = EmailOutput
    description = (
        "Sends an email over SMTP or SendGrid. Output: {message_id, transport, accepted, "
        "refused, provider_message_id}."
    )

    def __init__(self) -> None:
        self._tls = smtp.TlsContexts()
        #: Idle SMTP connections of this process, reused by the next message.
        self.smtp_pool = smtp.SmtpPool()
        self._sendgrid = sendgrid.SendgridAuth()
        self._hostname: str | None = None

    def authenticators(self) -> Mapping[CredentialType, Authenticator]:
        """SendGrid's bearer API key."""
        return {CredentialType.SENDGRID: self._sendgrid}

    async def aclose(self) -> None:
        """Say goodbye on the idle SMTP connections."""
        await self.smtp_pool.aclose()

    async def execute(self, ctx: StepContext, config: EmailConfig) -> NodeOutcome:
        """Resolve the credential, render and check the message, send it."""
        credential = await ctx.credential(config.credential)
        transport = TRANSPORTS.get(credential.type)
        if transport is None:
            raise PermanentError(
                f"credential {credential.name!r} is of type {credential.type.value}; the "
                "email node takes smtp or sendgrid",
                error_type="credential.type",
                details={"credential": credential.name, "type": credential.type.value},
            )
        letter = compose(await ctx.render(_fields(config)), ctx.idempotency_key)
        if credential.type is CredentialType.SMTP:
            output = await self._smtp(ctx, credential, letter, config)
        else:
            content = await _off_loop(letter, sendgrid.encode, letter, config.max_message_bytes)
            sent = await sendgrid.send_sendgrid(
                ctx, credential, content, timeout_s=config.timeout_s
            )
            output = EmailOutput(
                message_id=letter.message_id,
                transport="sendgrid",
                accepted=letter.recipients,
                refused={},
                provider_message_id=sent.provider_message_id,
            )
        return NodeOutcome(output=output.model_dump())

    async def _smtp(
        self, ctx: StepContext, credential: ResolvedCredential, letter: Letter, config: EmailConfig
    ) -> EmailOutput:
        raw = await _off_loop(letter, mime, letter, ctx.now)
        check_size(len(raw), config.max_message_bytes)
        if self._hostname is None:
            # For EHLO; not socket.getfqdn(), which may wait on a reverse DNS lookup.
            self._hostname = socket.gethostname() or "localhost"
        sent = await smtp.send_smtp(
            ctx.http,
            credential,
            letter.sender.address,
            letter.recipients,
            raw,
            timeout_s=config.timeout_s,
            tls=self._tls.get(),
            local_hostname=self._hostname,
            pool=self.smtp_pool,
        )
        return EmailOutput(
            message_id=letter.message_id,
            transport="smtp",
            accepted=sent.accepted,
            refused=sent.refused,
        )


def _fields(config: EmailConfig) -> dict[str, Any]:
    """The message's fields as written (templates in them), under their config names."""
    return {
        "from": config.sender,
        "to": config.to,
        "cc": config.cc,
        "bcc": config.bcc,
        "reply_to": config.reply_to,
        "subject": config.subject,
        "text": config.text,
        "html": config.html,
        "headers": dict(config.headers),
    }


async def _off_loop(letter: Letter, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, in a thread when the bodies are large."""
    size = len(letter.text or "") + len(letter.html or "")
    return await asyncio.to_thread(fn, *args) if size > OFF_LOOP_CHARS else fn(*args)
