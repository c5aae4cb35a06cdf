"""schemathesis hooks for ``support.fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``): how to
send the bodies it generates for the media types it has no serializer for."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import schemathesis


def _text(value: Any) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return None


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """A string as it is; anything else one JSON document a line."""
    raw = _text(value)
    if raw is not None:
        return raw
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


@schemathesis.serializer("text/csv")
def csv_rows(ctx: Any, value: Any) -> bytes:
    """A string as it is; a list of objects as a header row and one row each."""
    raw = _text(value)
    if raw is not None:
        return raw
    rows = value if isinstance(value, list) else [value]
    rows = [row if isinstance(row, dict) else {"value": row} for row in rows]
    names = list(dict.fromkeys(name for row in rows for name in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names or ["value"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()
