"""Database URLs as shown to people: never with a password."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

#: Query parameters that may carry a secret (libpq's and asyncpg's names).
_SECRET_PARAMS = frozenset({"password", "sslpassword", "passfile", "sslkey"})


def display_url(url: str) -> str:
    """``url`` without its password (or password-like query parameters) and without the
    async driver name: ``postgresql://postgres@db/flowyard``, ``sqlite:////path/flowyard.db``."""
    if "://" not in url:
        return url
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        return url.split("://", 1)[0] + "://..."
    parsed = parsed.set(drivername=parsed.get_backend_name(), password=None)
    query = {k: v for k, v in parsed.query.items() if k.lower() not in _SECRET_PARAMS}
    return parsed.set(query=query).render_as_string(hide_password=True)
