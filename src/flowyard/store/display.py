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
        parsed.port  # noqa: B018 - parsed when read: "host:notaport" raises here
    except (ArgumentError, ValueError, TypeError):
        return url.split("://", 1)[0] + "://..."
    parsed = parsed.set(drivername=parsed.get_backend_name(), password=None)
    query = {k: v for k, v in parsed.query.items() if k.lower() not in _SECRET_PARAMS}
    return parsed.set(query=query).render_as_string(hide_password=True)


def url_password(url: str) -> str | None:
    """The password in ``url``'s userinfo, as written (None without one), found without
    parsing the rest: for keeping it out of messages about a URL that does not parse."""
    if "://" not in url:
        return None
    authority = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    if "@" not in authority:
        return None
    return authority.rsplit("@", 1)[0].partition(":")[2] or None
