"""Salesforce REST calls of one step: URLs under ``{instance}/services/data/{version}``, the
session refresh on ``INVALID_SESSION_ID``, and the mapping of Salesforce's error array
(``[{"message", "errorCode", "fields"}]``) to flowyard's transient and permanent errors.

Path segments are built only from validated API names and record ids, and external ids
are percent-encoded whole (``/``, ``?``, ``#`` and ``.`` included), so a template can never
add a path segment, a query or a ``..`` to a credentialed request.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from flowyard.domain.errors import PermanentError, TransientError
from flowyard.nodes.base import StepContext
from flowyard.nodes.httpio import Exchange, error_body, exchange, parse_retry_after
from flowyard.outbound import same_origin

from .auth import SalesforceAuth

#: A Salesforce API name (object or field): letters, digits and underscores, starting with
#: a letter (``Lead``, ``Email``, ``ns__Custom_Field__c``). Nothing that could end a path
#: segment or start a query.
API_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,79}$"
API_NAME = re.compile(API_NAME_PATTERN)
#: A record id: 15 characters (case-sensitive) or 18 (with the case-safe suffix).
RECORD_ID_PATTERN = r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$"
RECORD_ID = re.compile(RECORD_ID_PATTERN)
#: Error codes a later attempt may get past (limits, row locks, an instance restarting).
TRANSIENT_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
TRANSIENT_STATUSES = frozenset({408, 425, 429})
#: Errors kept whole in an error's details (the first one is also spread at its top level).
MAX_ERRORS = 10
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,99}$")


def segment(value: str) -> str:
    """One path segment, percent-encoded whole (``.`` too: ``..`` must stay a value)."""
    return quote(value, safe="").replace(".", "%2E")


class SalesforceClient:
    """The calls one step makes with one ``salesforce_oauth`` credential."""

    def __init__(
        self,
        ctx: StepContext,
        auth: SalesforceAuth,
        credential: str,
        *,
        instance_url: str,
        api_version: str,
        timeout_s: float,
        max_bytes: int,
    ) -> None:
        self.ctx = ctx
        self.auth = auth
        self.credential = credential
        self.instance = httpx.URL(instance_url.rstrip("/") + "/")
        self.base = f"{instance_url.rstrip('/')}/services/data/{api_version}"
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    def url(self, *segments: str) -> str:
        """``{base}/{segment}/...`` with every segment encoded."""
        return "/".join([self.base, *(segment(s) for s in segments)])

    def next_url(self, path: Any) -> str:
        """The absolute URL of a query's ``nextRecordsUrl``: a path under
        ``/services/data/`` of this instance, nothing else (an answer cannot send the next
        request, with the token, elsewhere)."""
        ok = (
            isinstance(path, str)
            and path.startswith("/services/data/")
            and not any(c in path for c in "?#\\%")
            and "//" not in path
            and "/../" not in path + "/"
            and "/./" not in path + "/"
        )
        if ok:
            url = self.instance.join(str(path))
            if same_origin(url, self.instance):
                return str(url)
        raise PermanentError(
            "Salesforce answered a nextRecordsUrl that is not a query path of the instance",
            error_type="salesforce.invalid_response",
            details={"nextRecordsUrl": str(path)[:300]},
        )

    async def call(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Exchange:
        """Send one request; on a 401 ``INVALID_SESSION_ID`` drop the token it carried and
        send it once more (with a new token). A non-2xx answer raises its mapped error."""
        content = None
        if json_body is not None:
            content = await _encode(json_body)
        done = await self._send(method, url, content, params)
        if done.status == 401 and _first_code(done.body) == "INVALID_SESSION_ID":
            self.auth.invalidate(
                self.credential, done.response.request.headers.get("authorization")
            )
            done = await self._send(method, url, content, params)
        if not done.response.is_success:
            await self.fail(method, done)
        return done

    async def _send(
        self, method: str, url: str, content: bytes | None, params: Mapping[str, str] | None
    ) -> Exchange:
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            request = self.ctx.http.build_request(
                method,
                url,
                headers=headers,
                params=dict(params) if params else None,
                content=content,
                timeout=self.timeout_s,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise PermanentError(
                f"invalid Salesforce request: {exc}", error_type="salesforce.invalid_request"
            ) from exc
        return await exchange(
            self.ctx,
            request,
            prefix="salesforce",
            timeout_s=self.timeout_s,
            max_bytes=self.max_bytes,
            credential=self.credential,
        )

    async def fail(self, method: str, done: Exchange) -> NoReturn:
        """Raise the error of a non-2xx answer (see :func:`classify`)."""
        kept = await error_body(self.ctx, done.raw, done.body)
        raise classify(method, done.response, done.raw, done.body, kept)

    def invalid(self, method: str, done: Exchange, what: str) -> PermanentError:
        """A 2xx answer that is not what Salesforce sends (``salesforce.invalid_response``,
        permanent: the call may have taken effect)."""
        return PermanentError(
            f"Salesforce answered {method} {done.response.request.url.path} with {what}",
            error_type="salesforce.invalid_response",
            details={"status": done.status, "body": _snippet(done.raw)},
        )


async def _encode(value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=False)
    return text.encode() if len(text) < 64 * 1024 else await asyncio.to_thread(text.encode)


def _snippet(raw: bytes) -> str:
    return raw[:300].decode(errors="replace")


def _errors(body: Any) -> list[dict[str, Any]] | None:
    """Salesforce's error array, when the body is one."""
    if isinstance(body, list) and body and all(isinstance(e, dict) for e in body):
        return body
    if isinstance(body, dict) and isinstance(body.get("errorCode"), str):
        return [body]
    return None


def _first_code(body: Any) -> str | None:
    errors = _errors(body)
    code = errors[0].get("errorCode") if errors else None
    return code if isinstance(code, str) else None


def duplicate_ids(errors: list[dict[str, Any]]) -> list[str]:
    """The ids of the records a duplicate rule matched
    (``duplicateResult.matchResults[].matchRecords[].record.Id``), in order, each once."""
    found: list[str] = []
    for error in errors:
        result = error.get("duplicateResult")
        matches = result.get("matchResults") if isinstance(result, dict) else None
        for match in matches if isinstance(matches, list) else ():
            records = match.get("matchRecords") if isinstance(match, dict) else None
            for item in records if isinstance(records, list) else ():
                record = item.get("record") if isinstance(item, dict) else None
                rid = record.get("Id") if isinstance(record, dict) else None
                if isinstance(rid, str) and RECORD_ID.match(rid) and rid not in found:
                    found.append(rid)
    return found


def _error_summary(error: Mapping[str, Any]) -> dict[str, Any]:
    fields = error.get("fields")
    return {
        "errorCode": error.get("errorCode"),
        "message": str(error.get("message", ""))[:1000],
        "fields": [str(f) for f in fields] if isinstance(fields, list) else [],
    }


def classify(
    method: str, response: httpx.Response, raw: bytes, body: Any, kept: Any
) -> TransientError | PermanentError:
    """The error of a non-2xx answer: ``salesforce.<errorcode>`` from the error array
    (transient for :data:`TRANSIENT_CODES`, 5xx, 408/425/429), ``salesforce.http_<status>``
    when the JSON answer names no code, ``salesforce.invalid_response`` when the body is not
    JSON (transient on 5xx). ``kept`` is what the details keep of an unparsed body."""
    status = response.status_code
    where = f"{method} {response.request.url.path}"
    transient = status >= 500 or status in TRANSIENT_STATUSES
    details: dict[str, Any] = {"status": status}
    errors = _errors(body)
    code = _first_code(body)
    if errors and code and _CODE.match(code):
        first = _error_summary(errors[0])
        details.update(first)
        if len(errors) > 1:
            details["errors"] = [_error_summary(e) for e in errors[:MAX_ERRORS]]
        if code == "DUPLICATES_DETECTED":
            details["duplicate_ids"] = duplicate_ids(errors)
        error_type = f"salesforce.{code.lower()}"
        transient = transient or code in TRANSIENT_CODES
        message = f"Salesforce {where} answered {status} {code}: {first['message']}"
    elif raw.strip() and isinstance(body, str):
        error_type = "salesforce.invalid_response"
        details["body"] = kept if isinstance(kept, str) else _snippet(raw)
        message = f"Salesforce {where} answered {status} with a body that is not JSON"
    else:
        error_type = f"salesforce.http_{status}"
        details["body"] = kept
        message = f"Salesforce {where} answered {status}"
    if transient:
        return TransientError(
            message,
            error_type=error_type,
            details=details,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )
    return PermanentError(message, error_type=error_type, details=details)
