"""Webhook triggers ("hooks"): resources that start a run of a workflow's latest version
(or deliver a signal) when a sender posts to their public URL.

A hook is configuration, not part of the versioned definition (decision 0025): its id is an
unguessable URL-safe token (the URL is the first secret), and every delivery must also pass
the hook's own authentication scheme (:class:`HookScheme`) with a secret kept in the vault.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowyard.domain.commands import SIGNAL_NAME_PATTERN
from flowyard.domain.credentials import NAME_PATTERN, HeaderName

#: ``hk_`` and 32 URL-safe base64 characters: 192 random bits.
HOOK_ID_PATTERN = r"^hk_[A-Za-z0-9_-]{32}$"
_HOOK_ID = re.compile(HOOK_ID_PATTERN)
#: A readable path (``/api/v1/hooks/by-path/<path>``): one URL segment.
HOOK_PATH_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
#: A JSON pointer into the body (RFC 6901), e.g. ``/entry/0/id``.
POINTER_PATTERN = r"^(/[^/]*)*$"
#: Bodies are limited per hook; this is the most a hook may allow (a run's input is stored).
DEFAULT_MAX_BODY_BYTES = 256 * 1024
MAX_BODY_BYTES = 1024 * 1024
#: ``respond: on_finish`` holds the sender's connection at most this long.
MAX_RESPOND_TIMEOUT_S = 30.0
#: The default replay window of the ``hmac`` scheme (the signature's timestamp).
DEFAULT_TOLERANCE_S = 300
#: How long a delivery id is remembered by default (``dedupe.window_s``): a day.
DEFAULT_DEDUPE_WINDOW_S = 24 * 3600

INPUT_HELP = (
    "The run input: a JSON value whose strings may be templates over {body, form, query, "
    "headers}; default: the JSON body, or the form fields."
)

CredentialName = Annotated[str, Field(pattern=NAME_PATTERN)]
#: The URL a provider signs (Twilio): absolute http(s), no fragment.
SignedUrl = Annotated[str, Field(pattern=r"^https?://[^\s/#]+(/[^\s#]*)?$", max_length=2048)]


def new_hook_id() -> str:
    """A fresh hook id: ``hk_`` + 192 random bits, URL-safe."""
    return "hk_" + secrets.token_urlsafe(24)


def is_hook_id(value: str) -> bool:
    """Whether ``value`` has the shape of a hook id (anything else is not looked up)."""
    return bool(_HOOK_ID.match(value))


class HookScheme(StrEnum):
    """How a delivery proves it comes from the configured sender."""

    #: ``X-Flowyard-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``, replay window.
    HMAC = "hmac"
    #: ``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL (+ sorted form fields).
    TWILIO = "twilio"
    #: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` and the GET check.
    META = "meta"
    #: A static token in a named header.
    HEADER_TOKEN = "header_token"


class RespondMode(StrEnum):
    """What a delivery that starts a run is answered."""

    #: 202 with the run id at once.
    ACCEPTED = "accepted"
    #: 200 with the run's output when it ends within ``timeout_s``, else 202.
    ON_FINISH = "on_finish"
    #: A fixed status and body (Twilio: an empty 204 or TwiML).
    FIXED = "fixed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HookAuth(_Model):
    """The scheme and the vault credential holding its secret."""

    scheme: HookScheme
    credential: CredentialName = Field(
        description="A `webhook_secret` credential (hmac, meta, header_token) or a `twilio` "
        "credential (its auth token signs Twilio's requests)."
    )
    header: HeaderName | None = Field(
        None, description="header_token: the header carrying the token (X-Flowyard-Token)."
    )
    tolerance_s: int = Field(
        DEFAULT_TOLERANCE_S,
        ge=1,
        le=3600,
        description="hmac: a signature's timestamp may be this far from now (replay window).",
    )
    public_url: SignedUrl | None = Field(
        None,
        description="twilio: the exact URL Twilio posts to, as Twilio sees it (a proxy "
        "changes host and scheme); default: FLOWYARD_PUBLIC_URL + the hook's path.",
    )

    @model_validator(mode="after")
    def _fits_scheme(self) -> HookAuth:
        if self.header is not None and self.scheme is not HookScheme.HEADER_TOKEN:
            raise ValueError("header is only for the header_token scheme")
        if self.public_url is not None and self.scheme is not HookScheme.TWILIO:
            raise ValueError("public_url is only for the twilio scheme")
        return self

    @property
    def token_header(self) -> str:
        """The header_token scheme's header."""
        return self.header or "X-Flowyard-Token"


class HookDedupe(_Model):
    """Where a delivery's id is (a header or a body field) and how long it is remembered."""

    header: HeaderName | None = None
    body: Annotated[str, Field(pattern=POINTER_PATTERN, max_length=256)] | None = Field(
        None, description="A JSON pointer into the JSON body (or a form field: /Name)."
    )
    window_s: int = Field(DEFAULT_DEDUPE_WINDOW_S, ge=1, le=30 * 24 * 3600)

    @model_validator(mode="after")
    def _one_place(self) -> HookDedupe:
        if (self.header is None) == (self.body is None):
            raise ValueError("give exactly one of header and body")
        return self


class HookRespond(_Model):
    """How the delivery is answered."""

    mode: RespondMode = RespondMode.ACCEPTED
    timeout_s: float = Field(10.0, gt=0, le=MAX_RESPOND_TIMEOUT_S)
    status: int = Field(200, description="fixed: 200, 201, 202 or 204.")
    body: Annotated[str, Field(max_length=4096)] | None = None
    content_type: Annotated[
        str, Field(pattern=r"^[a-z]+/[a-z0-9.+-]+(; ?charset=[a-z0-9-]+)?$", max_length=100)
    ] = "text/plain; charset=utf-8"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fixed(self) -> HookRespond:
        if self.status not in (200, 201, 202, 204):
            raise ValueError("status must be 200, 201, 202 or 204")
        if self.status == 204 and self.body:
            raise ValueError("a 204 answer has no body")
        return self


class SignalAction(_Model):
    """Deliver a signal to the unfinished run with this correlation key."""

    name: Annotated[str, Field(pattern=SIGNAL_NAME_PATTERN)]
    correlation_key: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        description="A template over {body, form, query, headers}, e.g. '{{ form.From }}'."
    )


class HookAction(_Model):
    """What a delivery does: start a run (default) or deliver a signal."""

    signal: SignalAction | None = None


class HookConfig(_Model):
    """Everything about a hook but its identity and workflow: stored as JSON. A signal
    action answers at once (``respond`` ``accepted`` or ``fixed``): it starts no run to
    wait for."""

    auth: HookAuth
    input: Any = Field(None, description=INPUT_HELP)
    dedupe: HookDedupe | None = None
    respond: HookRespond = Field(default_factory=HookRespond)
    action: HookAction = Field(default_factory=HookAction)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1, le=MAX_BODY_BYTES)
    rate_limit: Annotated[str, Field(max_length=64)] | None = Field(
        None,
        description="Deliveries allowed per hook, e.g. '20/second;600/minute' "
        "(default: FLOWYARD_HOOK_RATE_LIMIT).",
    )

    @model_validator(mode="after")
    def _signal_answers_at_once(self) -> HookConfig:
        if self.action.signal is not None and self.respond.mode is RespondMode.ON_FINISH:
            raise ValueError("a signal action starts no run: respond accepted or fixed")
        return self


@dataclass(frozen=True, slots=True)
class HookRecord:
    """A stored hook."""

    id: str
    name: str
    workflow_id: str
    workflow_name: str
    path: str | None
    enabled: bool
    config: HookConfig
    created_at: datetime
    updated_at: datetime
    created_by: str | None


@dataclass(frozen=True, slots=True)
class NewHook:
    """A hook to create (the store gives it its id)."""

    name: str
    workflow_id: str
    path: str | None
    enabled: bool
    config: HookConfig
    created_by: str | None


@dataclass(frozen=True, slots=True)
class HookChange:
    """A change to a hook; None leaves a field as it is (``path``: ``clear_path`` unsets it)."""

    enabled: bool | None = None
    path: str | None = None
    clear_path: bool = False
    config: HookConfig | None = None
    workflow_id: str | None = None


class RefusalReason(StrEnum):
    """Why a delivery was refused: the audit log's ``detail.reason``."""

    UNKNOWN_HOOK = "unknown_hook"
    DISABLED = "disabled"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    MISSING_SIGNATURE = "missing_signature"
    BAD_SIGNATURE = "bad_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    CREDENTIAL_UNAVAILABLE = "credential_unavailable"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    MALFORMED_BODY = "malformed_body"
    MISSING_DELIVERY_ID = "missing_delivery_id"
    INPUT_MAPPING = "input_mapping"
    INVALID_INPUT = "invalid_input"
    NO_RUN = "no_run"
    CONFLICT = "conflict"
    VERIFY_TOKEN = "verify_token"


#: The HTTP status and the problem ``type`` suffix of each refusal.
REFUSAL_STATUS: dict[RefusalReason, tuple[int, str]] = {
    RefusalReason.UNKNOWN_HOOK: (404, "not-found"),
    RefusalReason.DISABLED: (404, "not-found"),
    RefusalReason.RATE_LIMITED: (429, "rate-limited"),
    RefusalReason.TOO_LARGE: (413, "too-large"),
    RefusalReason.MISSING_SIGNATURE: (401, "hook-unauthenticated"),
    RefusalReason.BAD_SIGNATURE: (401, "hook-unauthenticated"),
    RefusalReason.STALE_TIMESTAMP: (401, "hook-unauthenticated"),
    RefusalReason.CREDENTIAL_UNAVAILABLE: (503, "hook-misconfigured"),
    RefusalReason.UNSUPPORTED_MEDIA_TYPE: (415, "unsupported-media-type"),
    RefusalReason.MALFORMED_BODY: (422, "invalid-input"),
    RefusalReason.MISSING_DELIVERY_ID: (422, "invalid-input"),
    RefusalReason.INPUT_MAPPING: (422, "invalid-input"),
    RefusalReason.INVALID_INPUT: (422, "invalid-input"),
    RefusalReason.NO_RUN: (404, "not-found"),
    RefusalReason.CONFLICT: (409, "conflict"),
    RefusalReason.VERIFY_TOKEN: (403, "forbidden"),
}


class HookRefused(Exception):
    """A delivery is refused: nothing was started. ``reason`` goes to the audit log; the
    ``message`` is what the sender is told (never a secret, a signature or the body)."""

    def __init__(
        self,
        reason: RefusalReason,
        message: str,
        *,
        problems: list[dict[str, str]] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.problems = problems or []
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        """The HTTP status of the answer."""
        return REFUSAL_STATUS[self.reason][0]

    @property
    def code(self) -> str:
        """The problem ``type`` suffix."""
        return REFUSAL_STATUS[self.reason][1]
