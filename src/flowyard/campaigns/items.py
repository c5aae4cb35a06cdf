"""Items of a campaign read one at a time from a JSON array, NDJSON or CSV, each with where
it came from (its index, or its line), so a bad one is named and the rest never held."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any, BinaryIO, cast

from flowyard.domain import jsonvalue

#: A CSV field longer than this is refused (the csv module's own default is 128 KiB).
MAX_CSV_FIELD = 128 * 1024


class ItemFormat(StrEnum):
    """How a campaign's items arrive."""

    JSON = "json"  # a JSON array in the request body's ``items``
    NDJSON = "ndjson"  # one JSON value per line
    CSV = "csv"  # a header row, then one item (an object of strings) per row

    @classmethod
    def of_media_type(cls, content_type: str | None) -> ItemFormat | None:
        """The format of a ``Content-Type`` (parameters ignored); None when unknown."""
        media = (content_type or "").split(";", 1)[0].strip().lower()
        return {
            "application/json": cls.JSON,
            "application/x-ndjson": cls.NDJSON,
            "application/ndjson": cls.NDJSON,
            "application/jsonl": cls.NDJSON,
            "text/csv": cls.CSV,
        }.get(media)


class ItemError(ValueError):
    """An item that cannot be read: ``where`` is a JSON pointer (``/items/3``) or a line
    (``line 7``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class Item:
    """One item and where it came from (``/items/<i>`` or ``line <n>``); ``strict``: parsed
    by :func:`flowyard.domain.jsonvalue.loads`, so strict JSON already."""

    where: str
    value: Any
    strict: bool = False


def from_list(items: Iterable[Any]) -> Iterator[Item]:
    """Items of a JSON array already parsed (strictly) with the request body."""
    for index, value in enumerate(items):
        yield Item(f"/items/{index}", value)


def from_ndjson(stream: IO[bytes]) -> Iterator[Item]:
    """One strict JSON value per line (UTF-8); blank lines are skipped."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            value = jsonvalue.loads(line)
        except jsonvalue.JsonValueError as exc:
            raise ItemError(f"line {number}", f"not acceptable JSON: {exc}") from None
        except UnicodeDecodeError:
            raise ItemError(f"line {number}", "not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise ItemError(
                f"line {number}", f"not JSON: {exc.msg} at column {exc.colno}"
            ) from None
        yield Item(f"line {number}", value, strict=True)


def from_csv(stream: IO[bytes]) -> Iterator[Item]:
    """A header row naming the fields (unique, not empty), then one item per row: an object
    of the row's fields as strings. A row with another number of fields is refused."""
    text = io.TextIOWrapper(cast(BinaryIO, stream), encoding="utf-8-sig", newline="")
    try:
        yield from _rows(csv.reader(_lines(text)))
    finally:
        # The caller owns the stream: unwrapped, so the wrapper neither closes it when it is
        # collected nor warns that a file it wraps was left open.
        with contextlib.suppress(ValueError):
            text.detach()


def _rows(reader: Any) -> Iterator[Item]:
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ItemError("line 1", f"not CSV: {exc}") from None
    if not header:
        raise ItemError("line 1", "the CSV has no header row naming the fields")
    if any(not name for name in header) or len(set(header)) != len(header):
        raise ItemError("line 1", "the header names every field once, none empty")
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader, None)
        except UnicodeDecodeError:
            raise ItemError(f"line {start}", "not UTF-8") from None
        except csv.Error as exc:
            raise ItemError(f"line {start}", f"not CSV: {exc}") from None
        if row is None:
            return
        if not row:
            continue
        if len(row) != len(header):
            raise ItemError(f"line {start}", f"{len(row)} fields; the header names {len(header)}")
        if any("\x00" in field for field in row):
            raise ItemError(f"line {start}", "a field holds U+0000")
        yield Item(f"line {start}", dict(zip(header, row, strict=True)))


def _lines(text: IO[str]) -> Iterator[str]:
    """Lines, each checked against the field limit (csv's own limit raises too late to
    bound memory for a line without a delimiter)."""
    for line in text:
        if len(line) > MAX_CSV_FIELD * 8:
            raise csv.Error(f"a line longer than {MAX_CSV_FIELD * 8} characters")
        yield line
