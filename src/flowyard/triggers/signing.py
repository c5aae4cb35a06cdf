"""The authentication schemes of webhook deliveries: pure checks over the raw request.

Every comparison of a secret-derived value uses :func:`hmac.compare_digest` on bytes, so
its time does not depend on how much of a guess is right. A failed check raises
:class:`~flowyard.domain.hooks.HookRefused` whose message names what is wrong, never the
expected value.

References (the algorithms as the providers document them):

- Twilio, "Webhooks security": https://www.twilio.com/docs/usage/webhooks/webhooks-security
  (the URL Twilio requested, then each POST field name and value sorted by name, HMAC-SHA1
  with the auth token, base64; JSON bodies: ``bodySHA256`` in the signed URL's query).
- Meta, "Webhooks: Getting Started":
  https://developers.facebook.com/docs/graph-api/webhooks/getting-started
  (``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the payload with the app secret>``, and the
  ``hub.mode``/``hub.verify_token``/``hub.challenge`` verification request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import assert_never
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from flowyard.domain.credentials import CredentialType, ResolvedCredential
from flowyard.domain.hooks import HookAuth, HookRefused, HookScheme, RefusalReason

#: The generic scheme's header.
FLOWYARD_SIGNATURE = "x-flowyard-signature"
TWILIO_SIGNATURE = "x-twilio-signature"
META_SIGNATURE = "x-hub-signature-256"
#: Headers that carry proof, never shown to input templates.
SIGNATURE_HEADERS = frozenset({FLOWYARD_SIGNATURE, TWILIO_SIGNATURE, META_SIGNATURE})
#: The credential type each scheme reads its secret from.
CREDENTIAL_TYPES: dict[HookScheme, CredentialType] = {
    HookScheme.HMAC: CredentialType.WEBHOOK_SECRET,
    HookScheme.META: CredentialType.WEBHOOK_SECRET,
    HookScheme.HEADER_TOKEN: CredentialType.WEBHOOK_SECRET,
    HookScheme.TWILIO: CredentialType.TWILIO,
}
#: At most this many ``v1=`` signatures in one header (a sender rotating its secret sends two).
_MAX_SIGNATURES = 4


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a scheme checks: the raw body, the headers (lower-case names), the URL the
    sender signed (Twilio) and the form fields when the body is a form."""

    body: bytes
    headers: Mapping[str, str]
    url: str
    form: Sequence[tuple[str, str]] | None = None


def _refuse(reason: RefusalReason, message: str) -> HookRefused:
    return HookRefused(reason, message)


def _same(a: str | bytes, b: str | bytes) -> bool:
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def secret_of(credential: ResolvedCredential, scheme: HookScheme) -> str:
    """The signing key or token of ``credential`` for ``scheme``."""
    if scheme is HookScheme.TWILIO:
        return str(credential.values["auth_token"])
    return str(credential.values["secret"])


def check_credential(credential: ResolvedCredential, scheme: HookScheme) -> str | None:
    """Why ``credential`` cannot check ``scheme``'s deliveries (None: it can)."""
    wanted = CREDENTIAL_TYPES[scheme]
    if credential.type is not wanted:
        return (
            f"the {scheme.value} scheme needs a {wanted.value} credential, "
            f"{credential.name!r} is {credential.type.value}"
        )
    if scheme is HookScheme.TWILIO and credential.values.get("api_key_sid"):
        # Twilio signs with the account's auth token, never with an API key's secret.
        return (
            f"twilio credential {credential.name!r} holds an API key (api_key_sid); Twilio "
            "signs with the account's auth token: use a credential with the account SID and "
            "auth token"
        )
    return None


def verify(auth: HookAuth, secret: str, request: SignedRequest, now: float) -> None:
    """Check one delivery against ``auth`` (HookRefused when it fails)."""
    match auth.scheme:
        case HookScheme.HMAC:
            verify_hmac(secret, request.headers, request.body, now, auth.tolerance_s)
        case HookScheme.TWILIO:
            verify_twilio(secret, request)
        case HookScheme.META:
            verify_meta(secret, request.headers, request.body)
        case HookScheme.HEADER_TOKEN:
            presented = request.headers.get(auth.token_header.lower())
            if not presented:
                raise _refuse(RefusalReason.MISSING_SIGNATURE, f"no {auth.token_header} header")
            if not _same(presented, secret):
                raise _refuse(RefusalReason.BAD_SIGNATURE, f"{auth.token_header} does not match")
        case _:
            assert_never(auth.scheme)


# -- hmac (generic) --------------------------------------------------------------------------


def flowyard_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Flowyard-Signature`` value a sender sends for ``body`` at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_hmac(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: int
) -> None:
    """``X-Flowyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``
    (several ``v1`` while a secret rotates); ``t`` within ``tolerance_s`` of now."""
    header = headers.get(FLOWYARD_SIGNATURE)
    if not header:
        raise _refuse(RefusalReason.MISSING_SIGNATURE, "no X-Flowyard-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(",")[: _MAX_SIGNATURES + 1]:
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise _refuse(RefusalReason.BAD_SIGNATURE, "X-Flowyard-Signature is not t=<unix>,v1=<hex>")
    if not math.isfinite(now) or abs(now - timestamp) > tolerance_s:
        raise _refuse(
            RefusalReason.STALE_TIMESTAMP,
            f"the signature's timestamp is more than {tolerance_s}s from now",
        )
    expected = flowyard_signature(secret, timestamp, body).rpartition("v1=")[2]
    if not any(_same(expected, given.lower()) for given in signatures):
        raise _refuse(RefusalReason.BAD_SIGNATURE, "X-Flowyard-Signature does not match")


# -- twilio ----------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, form: Sequence[tuple[str, str]] = ()) -> str:
    """Twilio's ``X-Twilio-Signature`` of a request to ``url`` with ``form`` fields: the URL,
    then each field name and value by name (equal names: by value), HMAC-SHA1, base64."""
    data = url
    names = sorted({name for name, _ in form})
    for name in names:
        for value in sorted({v for n, v in form if n == name}):
            data += name + value
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> list[str]:
    """``url`` as given, and with its scheme's default port added or removed: Twilio signs
    the URL as configured in its console, which may or may not spell the port."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    variants = [url]
    if parts.port is None and default is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return variants


def verify_twilio(auth_token: str, request: SignedRequest) -> None:
    """``X-Twilio-Signature`` over the signed URL and the form fields; a JSON body is
    covered by the ``bodySHA256`` query parameter of the signed URL instead."""
    given = request.headers.get(TWILIO_SIGNATURE)
    if not given:
        raise _refuse(RefusalReason.MISSING_SIGNATURE, "no X-Twilio-Signature header")
    query = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
    form: Sequence[tuple[str, str]] = ()
    if "bodySHA256" in query:
        body_hash = hashlib.sha256(request.body).hexdigest()
        if not _same(body_hash, query["bodySHA256"].lower()):
            raise _refuse(RefusalReason.BAD_SIGNATURE, "the body does not match bodySHA256")
    elif request.form is not None:
        form = request.form
    elif request.body:
        # Without bodySHA256 the signature covers the URL alone: anyone holding one signed
        # URL could send any body with it.
        raise _refuse(
            RefusalReason.BAD_SIGNATURE, "a body that is not a form must be signed by bodySHA256"
        )
    for url in _port_variants(request.url):
        if _same(twilio_signature(auth_token, url, form), given):
            return
    raise _refuse(
        RefusalReason.BAD_SIGNATURE,
        "X-Twilio-Signature does not match (is the hook's public URL the one Twilio posts to?)",
    )


# -- meta ------------------------------------------------------------------------------------


def meta_signature(app_secret: str, body: bytes) -> str:
    """Meta's ``X-Hub-Signature-256`` of ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_meta(app_secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``."""
    given = headers.get(META_SIGNATURE)
    if not given:
        raise _refuse(RefusalReason.MISSING_SIGNATURE, "no X-Hub-Signature-256 header")
    if not _same(meta_signature(app_secret, body), given.strip().lower()):
        raise _refuse(RefusalReason.BAD_SIGNATURE, "X-Hub-Signature-256 does not match")


def verify_subscription(verify_token: str | None, query: Mapping[str, str]) -> str:
    """Meta's verification request: ``hub.mode=subscribe`` and the configured
    ``hub.verify_token``; returns ``hub.challenge`` to answer with."""
    if query.get("hub.mode") != "subscribe":
        raise _refuse(RefusalReason.VERIFY_TOKEN, "hub.mode must be subscribe")
    given = query.get("hub.verify_token")
    if verify_token is None or given is None or not _same(given, verify_token):
        raise _refuse(RefusalReason.VERIFY_TOKEN, "hub.verify_token does not match")
    challenge = query.get("hub.challenge", "")
    if not challenge or len(challenge) > 256 or not challenge.isprintable():
        raise _refuse(RefusalReason.MALFORMED_BODY, "hub.challenge is missing or malformed")
    return challenge
