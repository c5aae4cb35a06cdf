"""The ``http`` node type: one HTTP request with classified failures."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal, NoReturn

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowyard.domain.credentials import NAME_PATTERN
from flowyard.domain.errors import PermanentError, TransientError
from flowyard.nodes.base import NodeConfig, NodeOutcome, NodeType, StepContext
from flowyard.nodes.httpio import error_body, exchange, parse_retry_after

#: Statuses that a later attempt may get past (RFC 9110 semantics + common practice).
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpConfig(NodeConfig):
    """Request description; every string may be a template."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    body: str | None = None
    timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Deadline in seconds for the whole exchange: connecting, sending, every "
        "redirect and reading the body (http.timeout, transient, when it passes).",
    )
    idempotency_header: str | None = Field(
        "Idempotency-Key",
        description="Header carrying the step's stable idempotency key; null to not send it.",
    )
    max_response_bytes: int = Field(10 * 1024 * 1024, gt=0, le=100 * 1024 * 1024)
    follow_redirects: bool = False
    credential: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Name of a credential to authenticate with: bearer (Authorization: Bearer), "
        "basic (Authorization: Basic) or api_key_header (its header). Attached by the worker at "
        "send time, only to origins the credential allows (on redirects too); its secrets are "
        "redacted from the step's output and errors.",
    )

    @model_validator(mode="after")
    def _one_body(self) -> HttpConfig:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either 'json' or 'body', not both")
        return self


class HttpOutput(BaseModel):
    """What an http step stores: the final response's status, headers and decoded body."""

    model_config = ConfigDict(extra="ignore")

    status: int = Field(description="HTTP status of the (last) response.")
    headers: dict[str, str] = Field(description="Response headers (lower-case names).")
    body: Any = Field(description="The body: parsed JSON when the response says JSON, else text.")


class HttpNode(NodeType[HttpConfig]):
    """Send a request; output ``{status, headers, body}``.

    Non-2xx responses fail the step: 408/425/429/5xx and network errors as transient
    (``http.<status>``, ``http.timeout``, ``http.network``), other statuses as permanent.
    """

    type_name = "http"
    config_model = HttpConfig
    template_fields = ("/url", "/headers", "/query", "/json", "/body")
    output_model = HttpOutput
    description = "Calls an HTTP endpoint. Output: {status, headers, body}."

    def credential_refs(self, config: HttpConfig) -> list[tuple[str, str]]:
        """The ``credential`` of the config, if any."""
        return [("/config/credential", config.credential)] if config.credential else []

    def request_target_pointers(self, config: HttpConfig) -> list[str]:
        """URL, headers and query decide where the credential goes."""
        if not config.credential:
            return []
        return ["/config/url", "/config/headers", "/config/query"]

    async def execute(self, ctx: StepContext, config: HttpConfig) -> NodeOutcome:
        """Render the request, send it (the outbound layer attaches the credential) and
        classify the answer."""
        url = str(await ctx.render(config.url))
        headers = {str(k): str(v) for k, v in (await ctx.render(config.headers)).items()}
        if config.idempotency_header and config.idempotency_header not in headers:
            headers[config.idempotency_header] = ctx.idempotency_key
        kwargs: dict[str, Any] = {"headers": headers, "params": await ctx.render(config.query)}
        if config.json_body is not None:
            # In a thread: a rendered body may be megabytes (bounded by the expression limits).
            kwargs["content"] = await asyncio.to_thread(
                _encode_json, await ctx.render(config.json_body)
            )
            headers.setdefault("Content-Type", "application/json")
        elif config.body is not None:
            kwargs["content"] = str(await ctx.render(config.body)).encode()
        try:
            request = ctx.http.build_request(config.method, url, timeout=config.timeout_s, **kwargs)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            raise PermanentError(
                f"invalid request: {exc}", error_type="http.invalid_request"
            ) from exc
        done = await exchange(
            ctx,
            request,
            prefix="http",
            timeout_s=config.timeout_s,
            max_bytes=config.max_response_bytes,
            credential=config.credential,
            follow_redirects=config.follow_redirects,
        )
        if done.response.is_success:
            return NodeOutcome(output=_output(done.response, done.body))
        detail_body = await error_body(ctx, done.raw, done.body)
        return _fail(config.method, url, done.response, detail_body)


def _encode_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _output(response: httpx.Response, body: Any) -> dict[str, Any]:
    return {"status": response.status_code, "headers": dict(response.headers), "body": body}


def _fail(method: str, url: str, response: httpx.Response, body: Any) -> NoReturn:
    """Raise the error of a non-2xx ``response`` (transient for :data:`TRANSIENT_STATUSES`)."""
    status = response.status_code
    message = f"{method} {url} answered {status}"
    details = {"status": status, "body": body}
    if status in TRANSIENT_STATUSES:
        raise TransientError(
            message,
            error_type=f"http.{status}",
            details=details,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )
    raise PermanentError(message, error_type=f"http.{status}", details=details)
