"""RFC 9457 problem details: the one place errors become HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from flowyard.api.schemas import ProblemDetails
from flowyard.domain.errors import (
    Conflict,
    DefinitionError,
    FlowyardError,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from flowyard.engine.validation import pointer_from_loc

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://flowyard.dev/problems/"
#: Members RFC 9457 defines: an error's detail never overwrites them.
RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})
_PROBLEM_SCHEMA = ProblemDetails.model_json_schema()
_log = logging.getLogger("flowyard.api")

_STATUS: list[tuple[type[FlowyardError], int]] = [
    (DefinitionError, 422),
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (StoreUnavailable, 503),
]


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json response with a stable ``type``."""
    body = {"type": TYPE_BASE + code, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem answers with these statuses."""
    descriptions = {
        404: "Not found.",
        409: "Conflicts with the current state (the problem says which).",
        422: "Invalid input; `errors` locates every problem.",
    }
    return {
        status: {
            "description": descriptions.get(status, "Problem."),
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


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
            413: "too-large",
        }.get(exc.status_code, "http-error")
        response = problem(exc.status_code, code, str(exc.detail), str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal", "Internal error", "an unexpected error occurred")
