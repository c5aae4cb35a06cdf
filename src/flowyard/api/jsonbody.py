"""Strict JSON request bodies for every route (see :mod:`flowyard.domain.jsonvalue`).

Every router is an ``APIRouter(route_class=StrictJSONRoute)`` (a test walks ``app.routes``
to prove it). The route authorises the caller first (401/403 before a byte of the body is
parsed: :func:`~flowyard.api.security.authorize`, which FastAPI's dependency then reuses),
hands FastAPI a request whose ``json()`` parses strictly (in a thread above
:data:`OFF_LOOP_BYTES`), and parses a JSON body before FastAPI does: a body that breaks
the rules (a lone surrogate, U+0000, NaN/Infinity or ``1e999``, an integer of more than
4,300 digits, nesting deeper than 64 levels) is answered 422 problem+json with a JSON
pointer to each place, before anything is stored. A body that is not JSON at all is
left to FastAPI, which answers as it always has (422 ``json_invalid`` for a syntax error,
400 for bytes that are not UTF-8). A path, query or form parameter holding U+0000 is refused
(422) too.
"""

from __future__ import annotations

import asyncio
import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response, params
from fastapi.routing import APIRoute

from flowyard.api.security import authorize
from flowyard.domain import jsonvalue
from flowyard.domain.errors import InvalidInput, Problem

#: Bodies larger than this are parsed in a thread: parsing a few megabytes holds the event
#: loop, and every other request of the process, for tens of milliseconds; a thread costs
#: more than parsing a small body.
OFF_LOOP_BYTES = 64 * 1024


class StrictJSONRequest(Request):
    """A request whose ``json()`` refuses what strict JSON refuses
    (:class:`~flowyard.domain.jsonvalue.JsonValueError`)."""

    async def json(self) -> Any:
        """The body parsed with :func:`flowyard.domain.jsonvalue.loads` (cached; in a thread
        above :data:`OFF_LOOP_BYTES`)."""
        if not hasattr(self, "_json"):
            body = await self.body()
            if len(body) > OFF_LOOP_BYTES:
                self._json = await asyncio.to_thread(jsonvalue.loads, body)
            else:
                self._json = jsonvalue.loads(body)
        return self._json


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this media type as JSON (``application/json`` and
    ``application/*+json``; no ``Content-Type``: no, FastAPI's strict default)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def refusal(exc: jsonvalue.JsonValueError) -> InvalidInput:
    """The 422 answer to a body strict JSON refuses: every problem with its pointer."""
    problems = [Problem(p.pointer, p.message, p.code) for p in exc.problems]
    return InvalidInput(f"the body is not acceptable JSON: {exc}", problems)


def refuse_nul_parameters(request: Request, form: list[tuple[str, Any]] | None = None) -> None:
    """Refuse U+0000 in a path, query or form parameter (422): PostgreSQL cannot take it in
    text, so it would fail the query (500) instead of finding nothing."""
    for where, items in (
        ("path", list(request.path_params.items())),
        ("query", request.query_params.multi_items()),
        ("form", form or []),
    ):
        for name, value in items:
            if isinstance(value, str) and "\x00" in name + value:
                label = jsonvalue.clean_text(name)
                raise InvalidInput(
                    f"the {where} parameter {label!r} contains U+0000",
                    [
                        Problem(
                            "",
                            f"{where} parameter {label!r}: U+0000 is not allowed",
                            "nul_character",
                        )
                    ],
                )


class StrictJSONRoute(APIRoute):
    """An API route whose caller is authorised before its body is read, and whose JSON
    body is parsed strictly (422 with pointers otherwise)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a :class:`StrictJSONRequest` parsed up front."""
        handler = super().get_route_handler()
        # As FastAPI decides: a body field that is not a form is read as JSON.
        takes_form = self.body_field is not None and isinstance(
            self.body_field.field_info, params.Form
        )
        takes_json = self.body_field is not None and not takes_form

        async def strict_handler(request: Request) -> Response:
            request = StrictJSONRequest(request.scope, request.receive)
            # Who calls, first: an anonymous or unauthorised client gets 401/403 without the
            # API reading its body, let alone parsing it (the app's authorize dependency
            # reuses this answer).
            await authorize(request)
            # The form is parsed once: Starlette keeps it for FastAPI's own read.
            form = list((await request.form()).multi_items()) if takes_form else None
            refuse_nul_parameters(request, form)
            if takes_json and is_json(request.headers.get("content-type")):
                try:
                    if await request.body():
                        await request.json()
                except jsonvalue.JsonValueError as exc:
                    raise refusal(exc) from None
                except ValueError:
                    pass  # not JSON: FastAPI parses it again and answers as usual
            return await handler(request)

        return strict_handler
