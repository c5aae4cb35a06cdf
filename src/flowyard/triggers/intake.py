"""A delivery's body and its mapping: strict JSON or a bounded form, the scope input
templates see ({body, form, query, headers}), the delivery id for de-duplication."""

from __future__ import annotations

import email.message
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from flowyard.domain import jsonvalue
from flowyard.domain.hooks import HookConfig, HookRefused, HookScheme, RefusalReason
from flowyard.triggers.signing import SIGNATURE_HEADERS

FORM = "application/x-www-form-urlencoded"
#: A form has at most this many fields (Twilio's SMS webhook sends about 20).
MAX_FORM_FIELDS = 1000
#: Headers never shown to input templates: credentials of the request, and every signature.
HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"}) | SIGNATURE_HEADERS
#: A delivery id longer than this is refused (it is hashed into the run's idempotency key).
MAX_DELIVERY_ID = 1000


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A delivery's body: JSON (``json``), a form (``form``), or empty (neither)."""

    json: Any = None
    is_json: bool = False
    form: list[tuple[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class Intake:
    """What a delivery gives templates and the dedupe lookup."""

    body: ParsedBody
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    hidden: frozenset[str] = field(default_factory=frozenset)

    def scope(self) -> dict[str, Any]:
        """The scope of input and correlation-key templates: ``body`` (the JSON body, or
        the form as a dict), ``form``, ``query``, ``headers`` (lower-case names, without
        credentials, signatures or the hook's token header)."""
        form = as_dict(self.body.form or [])
        return {
            "body": self.body.json if self.body.is_json else form,
            "form": form,
            "query": as_dict(self.query),
            "headers": {k: v for k, v in self.headers.items() if k not in self.hidden},
        }

    def default_input(self) -> Any:
        """The run input without a template: the JSON body, the form fields, else ``{}``."""
        if self.body.is_json:
            return self.body.json
        return as_dict(self.body.form or [])


def hidden_headers(config: HookConfig) -> frozenset[str]:
    """The headers templates never see for ``config``: :data:`HIDDEN_HEADERS` and the
    header_token scheme's token header."""
    if config.auth.scheme is HookScheme.HEADER_TOKEN:
        return HIDDEN_HEADERS | {config.auth.token_header.lower()}
    return HIDDEN_HEADERS


def as_dict(items: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Fields as a dict: one value as a string, a repeated name as the list of its values."""
    out: dict[str, Any] = {}
    for name, value in items:
        if name not in out:
            out[name] = value
        elif isinstance(out[name], list):
            out[name].append(value)
        else:
            out[name] = [out[name], value]
    return out


def media_type(content_type: str | None) -> str | None:
    """The lower-case media type of a ``Content-Type`` header (None without one)."""
    if not content_type:
        return None
    message = email.message.Message()
    message["content-type"] = content_type
    return message.get_content_type()


def is_json_type(media: str | None) -> bool:
    """``application/json`` or ``application/*+json``."""
    return media is not None and (media == "application/json" or media.endswith("+json"))


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """A URL-encoded form, strict UTF-8, at most :data:`MAX_FORM_FIELDS` fields, no U+0000."""
    try:
        text = body.decode("utf-8")
        fields = parse_qsl(
            text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict"
        )
    except UnicodeDecodeError:
        raise HookRefused(RefusalReason.MALFORMED_BODY, "the form is not UTF-8") from None
    except ValueError:
        raise HookRefused(
            RefusalReason.MALFORMED_BODY, f"the form has more than {MAX_FORM_FIELDS} fields"
        ) from None
    if any("\x00" in name + value for name, value in fields):
        raise HookRefused(RefusalReason.MALFORMED_BODY, "a form field contains U+0000")
    return fields


def parse_body(body: bytes, content_type: str | None) -> ParsedBody:
    """The body by its media type: strict JSON (:mod:`flowyard.domain.jsonvalue`: 422 with
    pointers), a form, or nothing; any other media type with a body is refused (415)."""
    media = media_type(content_type)
    if is_json_type(media):
        if not body.strip():
            raise HookRefused(RefusalReason.MALFORMED_BODY, "the JSON body is empty")
        try:
            return ParsedBody(json=jsonvalue.loads(body), is_json=True)
        except jsonvalue.JsonValueError as exc:
            raise HookRefused(
                RefusalReason.MALFORMED_BODY,
                f"the body is not acceptable JSON: {exc}",
                problems=[
                    {"pointer": p.pointer, "message": p.message, "code": p.code}
                    for p in exc.problems
                ],
            ) from None
        except ValueError as exc:
            raise HookRefused(
                RefusalReason.MALFORMED_BODY, f"the body is not JSON: {exc}"
            ) from None
    if media == FORM:
        return ParsedBody(form=parse_form(body))
    if not body:
        return ParsedBody()
    raise HookRefused(
        RefusalReason.UNSUPPORTED_MEDIA_TYPE,
        f"send application/json or {FORM}, not {media or 'a body without Content-Type'}",
    )


def _at_pointer(value: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer (None when absent)."""
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list) and key.isascii() and key.isdigit():
            index = int(key)
            value = value[index] if index < len(value) else None
        else:
            return None
    return value


def delivery_id(config: HookConfig, intake: Intake) -> str | None:
    """The delivery id ``config.dedupe`` points at (None without dedupe); refused when
    the delivery lacks it."""
    dedupe = config.dedupe
    if dedupe is None:
        return None
    if dedupe.header is not None:
        found: Any = intake.headers.get(dedupe.header.lower())
        where = f"header {dedupe.header}"
    else:
        assert dedupe.body is not None
        source = intake.body.json if intake.body.is_json else as_dict(intake.body.form or [])
        found = _at_pointer(source, dedupe.body)
        where = f"body field {dedupe.body}"
    if isinstance(found, bool) or not isinstance(found, str | int | float) or found == "":
        raise HookRefused(
            RefusalReason.MISSING_DELIVERY_ID, f"no delivery id in the {where} (a string)"
        )
    text = str(found)
    if len(text) > MAX_DELIVERY_ID:
        raise HookRefused(
            RefusalReason.MISSING_DELIVERY_ID,
            f"the delivery id is longer than {MAX_DELIVERY_ID} characters",
        )
    return text


def delivery_key(delivery: str) -> str:
    """What the store keeps of a delivery id: its SHA-256 (bounded, and the id may be data
    the sender did not mean to have stored)."""
    return hashlib.sha256(delivery.encode()).hexdigest()
