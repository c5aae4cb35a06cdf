"""RFC 9457 problem details: the one place errors become HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from flowyard.api.headers import security_headers
from flowyard.domain.errors import (
    Busy,
    Conflict,
    DefinitionError,
    FlowyardError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    StoreUnavailable,
)
from flowyard.engine.validation import pointer_from_loc

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://flowyard.dev/problems/"
#: Members RFC 9457 defines: an error's detail never overwrites them.
RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})
#: The one schema of every problem response, a component referenced by ``$ref``.
PROBLEM_SCHEMA_REF = "#/components/schemas/ProblemDetails"
_log = logging.getLogger("flowyard.api")

_STATUS: list[tuple[type[FlowyardError], int]] = [
    (DefinitionError, 422),
    (InvalidInput, 422),
    (NotFound, 404),
    (PreconditionFailed, 412),  # before Conflict: it is one
    (PreconditionRequired, 428),
    (Conflict, 409),
    (StoreUnavailable, 503),
    (Busy, 503),
]


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json response with a stable ``type``."""
    body = {"type": TYPE_BASE + code, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _example(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": TYPE_BASE + code, "title": title, "status": status, "detail": detail, **extra}


#: Problem answers as documented in OpenAPI: status -> (description, example). Declared once;
#: routes pick theirs with :func:`documented`, and :mod:`flowyard.api.openapi` adds the ones
#: every protected route (401, 403) or every route with input (422) can give.
PROBLEM_RESPONSES: dict[int, tuple[str, dict[str, Any]]] = {
    400: (
        "The body could not be read (not UTF-8, not parseable).",
        _example(
            400,
            "bad-request",
            "Bad Request",
            "There was an error parsing the body",
        ),
    ),
    401: (
        "Missing, invalid or expired credentials (`WWW-Authenticate: Bearer`).",
        _example(401, "unauthorized", "missing credentials", "missing credentials"),
    ),
    403: (
        "The caller's role may not do this.",
        _example(403, "forbidden", "role viewer may not do this", "role viewer may not do this"),
    ),
    404: (
        "Not found.",
        _example(404, "not-found", "Not found", "workflow 'lead-routing' not found"),
    ),
    409: (
        "Conflicts with the current state (the problem says which).",
        _example(
            409,
            "conflict",
            "Conflict",
            "run run_01J0000000000000000000000 already ended",
            current_status="succeeded",
        ),
    ),
    415: (
        "The body's media type is not accepted (send `application/json`).",
        _example(415, "unsupported-media-type", "Unsupported Media Type", "send JSON"),
    ),
    412: (
        "`If-Match` does not match the current ETag: the resource changed since it was read. "
        "Nothing was saved; `current_etag` and `latest_version` say what is current.",
        _example(
            412,
            "precondition-failed",
            "Precondition failed",
            'workflow \'lead-routing\' is at ETag "3" (version 3), not "2"',
            current_etag='"3"',
            latest_version=3,
            archived=False,
        ),
    ),
    428: (
        "`If-Match` is required here (send the ETag you read): nothing was changed.",
        _example(
            428,
            "precondition-required",
            "Precondition required",
            "send If-Match with the draft's ETag",
        ),
    ),
    413: (
        "The request body is over `FLOWYARD_MAX_REQUEST_BYTES`.",
        _example(413, "too-large", "request body too large", "request body too large"),
    ),
    422: (
        "Invalid input; `errors` locates every problem.",
        _example(
            422,
            "invalid-input",
            "Invalid input",
            "the request is invalid",
            errors=[
                {
                    "pointer": "/idempotency_key",
                    "in": "body",
                    "location": "body.idempotency_key",
                    "message": "String should have at most 200 characters",
                    "code": "string_too_long",
                }
            ],
        ),
    ),
    429: (
        "Too many requests: retry after `Retry-After` seconds.",
        _example(429, "rate-limited", "Too many requests", "rate limit exceeded", retry_after=12),
    ),
    503: (
        "The database is unavailable; retry later.",
        _example(503, "store-unavailable", "Store unavailable", "database unavailable"),
    ),
}


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of a problem answer with ``status``."""
    default, example = PROBLEM_RESPONSES.get(
        status, ("Problem.", _example(status, "http-error", "Problem", "the request failed"))
    )
    return {
        "description": description or default,
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_SCHEMA_REF}, "example": example}},
    }


def documented(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem answers with these statuses; a keyword
    ``d404="..."`` overrides the description of one status."""
    return {status: problem_response(status, descriptions.get(f"d{status}")) for status in statuses}


def status_for(exc: FlowyardError) -> int:
    """The HTTP status of a flowyard error."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def install(app: FastAPI) -> None:
    """Register the exception handlers."""

    @app.exception_handler(FlowyardError)
    async def _flowyard(request: Request, exc: FlowyardError) -> JSONResponse:
        status = status_for(exc)
        # A detail key that collides with a standard member (a Conflict's ``status`` is the
        # resource's current status) is renamed ``current_<key>``.
        extra: dict[str, Any] = {
            f"current_{k}" if k in RESERVED_MEMBERS else k: v for k, v in exc.detail.items()
        }
        if isinstance(exc, InvalidInput):
            extra["errors"] = [p.as_dict() for p in exc.problems]
        if isinstance(exc, Busy):
            _log.warning("%s %s refused: %s", request.method, request.url.path, exc)
            response = problem(status, exc.code, exc.title, exc.message, **extra)
            response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        if status >= 500:
            _log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return problem(status, exc.code, exc.title, exc.message, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            where = loc[0] if loc else "body"
            errors.append(
                {
                    "pointer": pointer_from_loc("", loc[1:]) if where == "body" else "",
                    "in": where,
                    "location": ".".join(str(p) for p in loc),
                    "message": err.get("msg", "invalid"),
                    "code": err.get("type", "invalid"),
                }
            )
        return problem(
            422, "invalid-input", "Invalid input", "the request is invalid", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not-found",
            405: "method-not-allowed",
            412: "precondition-failed",
            413: "too-large",
            415: "unsupported-media-type",
        }.get(exc.status_code, "http-error")
        response = problem(exc.status_code, code, str(exc.detail), str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        response = problem(500, "internal", "Internal error", "an unexpected error occurred")
        # Sent by the outermost error middleware, past the security headers middleware.
        response.raw_headers.extend(security_headers(request.scope["path"]))
        return response
