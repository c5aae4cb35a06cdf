"""HTTP exchanges of node types: one request through the outbound layer under one deadline,
its body read with a size cap and decoded (JSON off the event loop when large), and the
failures every caller classifies alike. Used by the ``http`` node and by the provider
integrations, each with its own error-type prefix (``http.timeout``,
``salesforce.network``, ...)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from flowyard.domain.errors import PermanentError, TransientError
from flowyard.nodes.base import StepContext

#: Bodies larger than this are decoded in a thread: a 10 MB JSON parse holds the event loop
#: ~0.1 s, which every other step, claim and commit of the process would wait for.
OFF_LOOP_BYTES = 64 * 1024
#: Error details keep at most this many characters of a body that is not stored whole.
ERROR_BODY_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Exchange:
    """The final response of a request (closed) and its body."""

    response: httpx.Response
    raw: bytes
    body: Any

    @property
    def status(self) -> int:
        return self.response.status_code


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


async def exchange(
    ctx: StepContext,
    request: httpx.Request,
    *,
    prefix: str,
    timeout_s: float,
    max_bytes: int,
    credential: str | None = None,
    follow_redirects: bool = False,
) -> Exchange:
    """Send ``request`` (the outbound layer attaches ``credential``), read at most
    ``max_bytes`` of the answer and decode it. A timeout of the whole exchange and network
    failures are transient (``<prefix>.timeout``, ``<prefix>.network``); an oversized or
    undecodable body is permanent."""
    what = f"{request.method} {request.url}"
    try:
        # One deadline for the whole exchange: httpx's timeouts bound each read, so a
        # server dripping a byte at a time could otherwise hold the step indefinitely.
        async with asyncio.timeout(timeout_s):
            response = await ctx.send(
                request, credential=credential, follow_redirects=follow_redirects
            )
            try:
                raw = await read_limited(response, max_bytes, prefix=prefix)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise TransientError(
            f"{what} timed out (timeout_s {timeout_s})", error_type=f"{prefix}.timeout"
        ) from exc
    except httpx.DecodingError as exc:
        raise PermanentError(
            f"{what}: the response body cannot be decoded: {exc}", error_type=f"{prefix}.decoding"
        ) from exc
    except httpx.UnsupportedProtocol as exc:
        raise PermanentError(str(exc), error_type=f"{prefix}.invalid_request") from exc
    except httpx.TransportError as exc:
        raise TransientError(
            f"{what} failed: {exc.__class__.__name__}: {exc}", error_type=f"{prefix}.network"
        ) from exc
    if len(raw) > OFF_LOOP_BYTES:
        body = await asyncio.to_thread(decode_body, response, raw)
    else:
        body = decode_body(response, raw)
    return Exchange(response, raw, body)


async def read_limited(response: httpx.Response, limit: int, *, prefix: str = "http") -> bytes:
    """The response body, refused past ``limit`` bytes (``<prefix>.response_too_large``)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise PermanentError(
                f"response larger than {limit} bytes", error_type=f"{prefix}.response_too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(response: httpx.Response, raw: bytes) -> Any:
    """JSON when the response says so and parses, else text."""
    content_type = response.headers.get("content-type", "")
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    if "json" in content_type and text:
        try:
            return json.loads(text)
        except ValueError:
            return text
        except RecursionError:
            # Deeper than the parser's stack: the same answer as any output too deep to store
            # (worker/storable.py), not an internal error retried in vain.
            raise PermanentError(
                "the response body is nested too deeply to store", error_type="output.too_deep"
            ) from None
    return text


async def error_body(ctx: StepContext, raw: bytes, body: Any) -> Any:
    """What an error's details keep of a body: all of it when small, else its start,
    redacted *before* it is cut (a secret straddling the cut would leave its first
    characters for the worker's redaction to miss); in a thread when large."""
    if len(raw) <= ERROR_BODY_CHARS:
        return body

    def cut() -> str:
        text = ctx.redact(raw.decode(errors="replace"))
        return str(text)[:ERROR_BODY_CHARS]

    return await asyncio.to_thread(cut) if len(raw) > OFF_LOOP_BYTES else cut()
