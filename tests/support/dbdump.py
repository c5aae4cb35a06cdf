"""Dump every table of a database as text, to prove a secret is nowhere in it."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from flowyard.store import normalize_url


def _text(value: Any) -> str:
    # Bytes as latin-1 text, so a plaintext secret inside a blob would still show. (The
    # repr of a Row is no good here: SQLAlchemy truncates long values in it.)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    return str(value)


async def dump_database(db_url: str) -> str:
    """Every value of every row of every table (reflected: also tables this checkout's
    metadata does not declare), in full, as JSON text."""
    engine = create_async_engine(normalize_url(db_url))
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sorted(sa.inspect(c).get_table_names()))
            text = ""
            for name in names:
                table = sa.Table(name, sa.MetaData())
                await conn.run_sync(lambda c, t=table: sa.inspect(c).reflect_table(t, None))
                rows = (await conn.execute(sa.select(table))).all()
                text += f"\n== {name}\n"
                text += json.dumps([list(row) for row in rows], default=_text, ensure_ascii=False)
            return text
    finally:
        await engine.dispose()
