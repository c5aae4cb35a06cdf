"""Credentials: typed secret bundles that nodes reference by name.

Each :class:`CredentialType` has a pydantic model (``extra="forbid"``) whose secret fields are
:class:`pydantic.SecretStr` and whose other fields are plain. The models are used to validate
what users send; the vault encrypts the validated data (plain and secret fields alike) and
reads return only :func:`mask` of it. :class:`ResolvedCredential` is what a node gets at run
time; :func:`redact` removes its secret values from anything a step produces.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Annotated, Any, TypeVar, get_args
from urllib.parse import quote, quote_plus

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SecretStr,
    ValidationError,
    model_validator,
)

from flowyard.domain.errors import InvalidInput, Problem
from flowyard.domain.ids import new_ulid

T = TypeVar("T")

#: A credential's name: how node configs refer to it.
NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
#: What reads show in place of a secret value.
MASK = "********"
#: What redaction puts in place of a secret value inside step outputs, errors and events.
REDACTED = "***"

Secret = Annotated[SecretStr, Field(min_length=1, max_length=8192)]
#: Secret values of the http-style types are at least this long: redaction replaces every
#: occurrence of a secret in what a step produces, so a one- or two-character secret would
#: garble every output (and such a value protects nothing anyway).
MIN_HTTP_SECRET = 8
HttpSecret = Annotated[SecretStr, Field(min_length=MIN_HTTP_SECRET, max_length=8192)]
Plain = Annotated[str, Field(min_length=1, max_length=2048)]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")]
HttpsUrl = Annotated[str, Field(pattern=r"^https://[^\s/]+(/\S*)?$", max_length=2048)]
#: A provider's base URL: https, or http to a loopback host only (a local fake in tests and
#: demos; plain http anywhere else would send the secret in the clear).
ProviderUrl = Annotated[
    str,
    Field(
        pattern=r"^(https://[^\s/]+|http://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])(:\d{1,5})?)(/\S*)?$",
        max_length=2048,
    ),
]


class CredentialType(StrEnum):
    """The kinds of credential the vault holds."""

    SALESFORCE_OAUTH = "salesforce_oauth"
    SMTP = "smtp"
    API_KEY_HEADER = "api_key_header"
    BASIC = "basic"
    BEARER = "bearer"
    TWILIO = "twilio"
    SENDGRID = "sendgrid"
    META_GRAPH = "meta_graph"
    SLACK = "slack"
    WEBHOOK_SECRET = "webhook_secret"
    CUSTOM = "custom"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SalesforceFlow(StrEnum):
    """How a Salesforce connected app gets its access token (OAuth 2.0)."""

    REFRESH_TOKEN = "refresh_token"
    CLIENT_CREDENTIALS = "client_credentials"
    JWT_BEARER = "jwt_bearer"


#: A current Salesforce REST API version (Winter '25); a credential may pin another.
SALESFORCE_API_VERSION = "v62.0"


class SalesforceOAuthData(_Data):
    """A Salesforce connected app: the refresh-token flow (``refresh_token``), the
    client-credentials flow (``client_secret``), or the JWT bearer flow (``private_key`` in
    PEM and ``username``). ``token_url`` defaults to ``https://login.salesforce.com``."""

    instance_url: ProviderUrl
    client_id: Plain
    flow: SalesforceFlow = SalesforceFlow.REFRESH_TOKEN
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    private_key: Secret | None = None
    username: Plain | None = None
    token_url: ProviderUrl | None = None
    api_version: Annotated[str, Field(pattern=r"^v\d{2,3}\.\d$")] = SALESFORCE_API_VERSION

    @model_validator(mode="after")
    def _flow_fields(self) -> SalesforceOAuthData:
        needed = {
            SalesforceFlow.REFRESH_TOKEN: ("client_secret", "refresh_token"),
            SalesforceFlow.CLIENT_CREDENTIALS: ("client_secret",),
            SalesforceFlow.JWT_BEARER: ("private_key", "username"),
        }[self.flow]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"the {self.flow.value} flow needs {', '.join(missing)}")
        return self


class SmtpData(_Data):
    """An SMTP relay; ``username``/``password`` only where it authenticates."""

    host: Plain
    port: int = Field(587, ge=1, le=65535)
    username: Plain | None = None
    password: Secret | None = None
    starttls: bool = True


class ApiKeyHeaderData(_Data):
    """A key sent in a request header."""

    header: HeaderName = "X-API-Key"
    value: HttpSecret


class BasicData(_Data):
    """HTTP basic authentication."""

    username: Plain
    password: HttpSecret


class BearerData(_Data):
    """A bearer token (``Authorization: Bearer <token>``)."""

    token: HttpSecret


class TwilioData(_Data):
    """A Twilio account (HTTP basic: account SID and auth token, or an API key SID and
    secret in ``api_key_sid``/``auth_token``)."""

    account_sid: Plain
    auth_token: Secret
    api_key_sid: Plain | None = None
    base_url: ProviderUrl = "https://api.twilio.com"


class SendgridData(_Data):
    """A SendGrid API key (v3 ``mail/send``)."""

    api_key: HttpSecret
    base_url: ProviderUrl = "https://api.sendgrid.com"


class MetaGraphData(_Data):
    """A Meta Graph API access token and the Instagram professional account it acts for."""

    access_token: HttpSecret
    account_id: Annotated[str, Field(pattern=r"^[0-9]{1,32}$")]
    api_version: Annotated[str, Field(pattern=r"^v\d{1,3}\.\d$")] = "v21.0"
    base_url: ProviderUrl = "https://graph.facebook.com"


class SlackData(_Data):
    """A Slack bot token (``xoxb-...``)."""

    bot_token: HttpSecret
    base_url: ProviderUrl = "https://slack.com"


class WebhookSecretData(_Data):
    """The secret inbound webhook deliveries are checked against (a hook's ``hmac`` or
    ``meta`` signature key, or its ``header_token``), and Meta's verify token for the
    subscription check. Inbound only: it has no origins, so it is never sent anywhere."""

    secret: HttpSecret
    verify_token: HttpSecret | None = None


CustomKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]


class CustomData(RootModel[dict[CustomKey, HttpSecret]]):
    """Free-form: up to 50 named values, every one of them secret."""

    model_config = ConfigDict(frozen=True)
    root: dict[CustomKey, HttpSecret] = Field(min_length=1, max_length=50)


MODELS: dict[CredentialType, type[BaseModel]] = {
    CredentialType.SALESFORCE_OAUTH: SalesforceOAuthData,
    CredentialType.SMTP: SmtpData,
    CredentialType.API_KEY_HEADER: ApiKeyHeaderData,
    CredentialType.BASIC: BasicData,
    CredentialType.BEARER: BearerData,
    CredentialType.TWILIO: TwilioData,
    CredentialType.SENDGRID: SendgridData,
    CredentialType.META_GRAPH: MetaGraphData,
    CredentialType.SLACK: SlackData,
    CredentialType.WEBHOOK_SECRET: WebhookSecretData,
    CredentialType.CUSTOM: CustomData,
}


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value.value if isinstance(value, Enum) else value


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(arg) for arg in get_args(annotation))


#: Secret field names per type (``custom``: every key, see :func:`secret_fields`).
SECRET_FIELDS: dict[CredentialType, frozenset[str]] = {
    type_: frozenset(
        name for name, info in model.model_fields.items() if _is_secret(info.annotation)
    )
    for type_, model in MODELS.items()
    if type_ is not CredentialType.CUSTOM
}


def secret_fields(type_: CredentialType, data: Mapping[str, Any]) -> frozenset[str]:
    """Names of the secret fields of ``data`` (every key of a ``custom`` credential)."""
    if type_ is CredentialType.CUSTOM:
        return frozenset(data)
    return SECRET_FIELDS[type_]


def parse_data(type_: CredentialType, raw: Any, *, pointer: str = "/data") -> dict[str, Any]:
    """Validate ``raw`` against the type's model: the data with secrets revealed (JSON
    values), defaults filled in. :class:`InvalidInput` locates every problem without echoing
    any value."""
    model = MODELS[type_]
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(
                pointer + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in loc),
                err["msg"],
                str(err["type"]),
            )
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
            for loc in [err["loc"]]
        ]
        raise InvalidInput(f"invalid {type_.value} credential data", problems) from None
    items = parsed.root.items() if isinstance(parsed, RootModel) else iter(parsed)
    return {name: _reveal(value) for name, value in items}


def mask(type_: CredentialType, data: Mapping[str, Any]) -> dict[str, Any]:
    """What reads show: plain fields as they are, secret fields as ``MASK`` (unset ones as
    null)."""
    secret = secret_fields(type_, data)
    return {
        name: (MASK if value is not None else None) if name in secret else value
        for name, value in data.items()
    }


def is_valid_name(name: str) -> bool:
    """True when ``name`` matches :data:`NAME_PATTERN`."""
    return bool(_NAME.match(name))


def new_credential_id() -> str:
    """A fresh credential id (``cred_`` prefix, time-ordered)."""
    return "cred_" + new_ulid()


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A credential's metadata (its data is only ever stored encrypted)."""

    id: str
    name: str
    type: CredentialType
    description: str | None
    key_id: str
    created_at: datetime
    updated_at: datetime
    created_by: str | None
    version: int
    #: Normalised origins the credential may be sent to; None when never set (rows from
    #: before migration 0007, provider credentials left to their defaults).
    allowed_origins: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """A credential row: metadata and the ciphertext of its data."""

    record: CredentialRecord
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ResolvedCredential:
    """A decrypted credential as the outbound layer uses it (``flowyard.outbound``): plain
    values of every field, the secret strings (including derived forms such as a basic-auth
    header value) that must never leave the step, and the origins it may be sent to (empty:
    none, it is refused everywhere). Node code never reads ``values``: it hands the
    credential's name to ``StepContext.send``."""

    name: str
    type: CredentialType
    values: Mapping[str, Any]
    secrets: frozenset[str] = field(default_factory=frozenset)
    allowed_origins: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ResolvedCredential(name={self.name!r}, type={self.type.value!r}, values=<hidden>)"

    @property
    def public_values(self) -> dict[str, Any]:
        """The plain (non-secret) fields, e.g. a Salesforce ``instance_url``."""
        hidden = secret_fields(self.type, self.values)
        return {k: v for k, v in self.values.items() if k not in hidden}

    @classmethod
    def of(
        cls,
        name: str,
        type_: CredentialType,
        data: Mapping[str, Any],
        allowed_origins: tuple[str, ...] = (),
    ) -> ResolvedCredential:
        """From decrypted data: collects the secret values and their derived forms."""
        names = secret_fields(type_, data)
        secrets = {str(data[n]) for n in names if data.get(n) not in (None, "")}
        if type_ is CredentialType.BASIC:
            pair = f"{data['username']}:{data['password']}".encode()
            secrets.add(base64.b64encode(pair).decode())
        return cls(name, type_, dict(data), frozenset(secrets), tuple(allowed_origins))


#: Secrets at least this long are also matched in encoded forms (base64 at any alignment,
#: URL-encoding, JSON escaping); the encodings of shorter values would match ordinary text.
MIN_ENCODED_SECRET = 6
_URLSAFE = str.maketrans("+/", "-_")


def secret_forms(secret: str) -> set[str]:
    """The forms of ``secret`` that redaction removes (each matched in any letter case): the
    value itself, its URL-encodings, its JSON-escaped forms (with ``/`` as ``\\/`` too, as
    PHP and some Java encoders write it), its HTML-escaped forms (an error page quoting it),
    and its base64 (standard and URL-safe) at each of the three alignments it can have inside
    a longer base64 text, so ``base64(user:password)`` or ``base64(secret)`` echoed back are
    caught too."""
    forms = {secret}
    if len(secret) < MIN_ENCODED_SECRET:
        return forms
    forms.update({quote(secret, safe=""), quote(secret), quote_plus(secret)})
    for escaped in (json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]):
        forms.update({escaped, escaped.replace("/", "\\/")})
    escaped = html.escape(secret)
    forms.update({escaped, escaped.replace("&#x27;", "&#39;"), html.escape(secret, quote=False)})
    raw = secret.encode()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        # Characters that depend on the secret's bits only: skip those mixed with the
        # bytes before it, and the last one, mixed with the bytes after it.
        core = encoded[-(-8 * shift // 6) : (8 * (shift + len(raw))) // 6]
        if len(core) >= MIN_ENCODED_SECRET:
            forms.update({core, core.translate(_URLSAFE)})
    return forms


def _pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching every form of every secret, longest first (a secret that
    contains another is removed whole); None when there is nothing to match."""
    forms = {form for s in secrets if s for form in secret_forms(s) if form}
    if not forms:
        return None
    ordered = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(re.escape(form) for form in ordered), re.IGNORECASE)


def _redact_str(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(REDACTED, text)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every occurrence of every secret, in any letter case and in the
    encoded forms of :func:`secret_forms`, replaced by ``REDACTED``, through dicts (keys
    too), lists, tuples and strings."""
    pattern = _pattern(secrets)
    if pattern is None:
        return value
    return _redact(value, pattern)


def _redact(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return _redact_str(value, pattern)
    if isinstance(value, Mapping):
        return {
            (_redact_str(k, pattern) if isinstance(k, str) else k): _redact(v, pattern)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v, pattern) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact(v, pattern) for v in value)
    return value


#: Fields of result dataclasses (transitions, errors, waits, forks, child runs) that carry
#: user data and are redacted whole; other fields (statuses, node ids, error types, times)
#: are structure and stay as they are, except nested dataclasses, which are walked.
DATA_FIELDS = frozenset({"output", "run_output", "message", "details", "data", "item", "input"})


def redact_result(value: T, secrets: Iterable[str]) -> T:
    """A result dataclass (e.g. a step's ``Transition``) with every secret removed from its
    data fields (:data:`DATA_FIELDS`) and from event data, recursively through nested
    dataclasses and tuples of them."""
    pattern = _pattern(secrets)
    if pattern is None:
        return value
    result: T = _redact_result(value, pattern)
    return result


def _redact_result(obj: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(obj, tuple):
        return tuple(_redact_result(item, pattern) for item in obj)
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if f.name in DATA_FIELDS:
            changes[f.name] = _redact(value, pattern)
        elif f.name == "event" and isinstance(value, tuple) and len(value) == 2:
            changes[f.name] = (value[0], _redact(value[1], pattern))
        elif f.name == "extra_events" and isinstance(value, tuple):
            changes[f.name] = tuple((kind, _redact(data, pattern)) for kind, data in value)
        elif isinstance(value, tuple) or dataclasses.is_dataclass(value):
            changes[f.name] = _redact_result(value, pattern)
    return dataclasses.replace(obj, **changes) if changes else obj
