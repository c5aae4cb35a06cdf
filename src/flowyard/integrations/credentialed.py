"""What the providers' node types share: the credential
they take, checked by type before anything is sent; the token authenticators of their
credential types; one request sent through :func:`~flowyard.nodes.httpio.exchange`; the
failures every one of them classifies alike (an unparseable answer, a refused value).

The secrets stay in the outbound layer: a node reads only the credential's plain fields
(``base_url``, ``account_sid``, ...) and hands the credential's *name* to the request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from flowyard.domain.credentials import CredentialType, ResolvedCredential
from flowyard.domain.errors import NodeError, PermanentError, TransientError
from flowyard.nodes.base import NodeType, StepContext
from flowyard.nodes.httpio import Exchange, error_body, exchange, parse_retry_after
from flowyard.outbound import AuthContext

C = TypeVar("C", bound=BaseModel)


class ProviderNode(NodeType[C]):
    """A provider's node type: its config names one credential in ``credential``."""

    def credential_refs(self, config: C) -> list[tuple[str, str]]:
        """The config's ``credential`` (every provider config has that field)."""
        name: str = getattr(config, "credential")  # noqa: B009 - C is any config model
        return [("/config/credential", name)]


#: Provider answers are a few hundred bytes; anything past this is not one of them.
MAX_RESPONSE_BYTES = 1024 * 1024


async def provider_credential(
    ctx: StepContext, name: str, expected: CredentialType, *, node_type: str
) -> dict[str, Any]:
    """The plain fields of the credential called ``name``, refused (``credential.type``,
    permanent) unless it is of the ``expected`` type: a bearer token handed to the ``sms``
    node would otherwise be sent to whatever origin it names."""
    info = await ctx.credential_info(name)
    kind = await ctx.credential_type(name)
    if kind is not expected:
        raise PermanentError(
            f"the {node_type} node takes a {expected.value} credential; {name!r} is of type "
            f"{kind.value}",
            error_type="credential.type",
            details={"credential": name, "type": kind.value, "expected": expected.value},
        )
    return info


def endpoint(base_url: str, *parts: str) -> str:
    """``base_url`` joined with path ``parts`` (each already checked or quoted)."""
    return base_url.rstrip("/") + "/" + "/".join(parts)


async def post(
    ctx: StepContext,
    url: str,
    *,
    prefix: str,
    credential: str,
    timeout_s: float,
    content: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> Exchange:
    """POST ``content`` to ``url`` with ``credential`` attached by the outbound layer (its
    allowed origins and the egress policy apply), under one deadline, the answer's body
    capped at :data:`MAX_RESPONSE_BYTES`."""
    try:
        request = ctx.http.build_request(
            "POST",
            url,
            content=content,
            headers={"Content-Type": content_type, "Accept": "application/json", **(headers or {})},
            timeout=timeout_s,
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
        raise PermanentError(
            f"invalid request: {exc}", error_type=f"{prefix}.invalid_request"
        ) from exc
    return await exchange(
        ctx,
        request,
        prefix=prefix,
        timeout_s=timeout_s,
        max_bytes=MAX_RESPONSE_BYTES,
        credential=credential,
    )


def json_bytes(value: Any) -> bytes:
    """``value`` as a UTF-8 JSON body."""
    return json.dumps(value, ensure_ascii=False).encode()


async def invalid_response(
    ctx: StepContext, done: Exchange, prefix: str, what: str
) -> PermanentError:
    """The error of a success status whose body is not the provider's answer (HTML from a
    proxy, cut JSON): permanent (``<prefix>.invalid_response``), since the provider may have
    acted and a retry could do it twice."""
    return PermanentError(
        f"{what} answered {done.status} with a body that is not its JSON answer",
        error_type=f"{prefix}.invalid_response",
        details={"status": done.status, "body": await error_body(ctx, done.raw, done.body)},
    )


async def status_failure(ctx: StepContext, done: Exchange, prefix: str, what: str) -> NodeError:
    """The error of a failure status without the provider's error body: transient for 408,
    429 and 5xx (``Retry-After`` honoured), else permanent; type ``<prefix>.<status>``."""
    status = done.status
    details = {"status": status, "body": await error_body(ctx, done.raw, done.body)}
    message = f"{what} answered {status}"
    if status in (408, 429) or status >= 500:
        return TransientError(
            message,
            error_type=f"{prefix}.{status}",
            details=rate_limit_details(details, status == 429),
            retry_after_s=retry_after(done),
        )
    return PermanentError(message, error_type=f"{prefix}.{status}", details=details)


def rate_limit_details(details: dict[str, Any], rate_limited: bool) -> dict[str, Any]:
    """``details`` with ``rate_limited: true`` when the provider refused for its rate: the
    worker then pauses the step's quota buckets for every worker (decision 0021), even
    when the answer carried no ``Retry-After``."""
    return {**details, "rate_limited": True} if rate_limited else details


def retry_after(done: Exchange) -> float | None:
    """The answer's ``Retry-After`` in seconds, if any."""
    return parse_retry_after(done.response.headers.get("retry-after"))


def refused(prefix: str, field: str, message: str, kind: str = "invalid_config") -> PermanentError:
    """A rendered config value the node refuses before sending anything
    (``<prefix>.invalid_config`` unless ``kind`` says more), permanent."""
    return PermanentError(
        f"{field}: {message}", error_type=f"{prefix}.{kind}", details={"field": field}
    )


class BearerTokenAuth:
    """``Authorization: Bearer <token>`` from one secret field of a provider credential
    (Slack's ``bot_token``, Meta Graph's ``access_token``). Graph also takes the token as an
    ``access_token`` query parameter; the header keeps it out of URLs, which end up in logs."""

    def __init__(self, field: str) -> None:
        self.field = field

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        """``authorization``."""
        return frozenset({"authorization"})

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> Mapping[str, str]:
        """The bearer header."""
        return {"Authorization": f"Bearer {credential.values[self.field]}"}
