"""Open a store from a URL."""

from __future__ import annotations

from urllib.parse import unquote

from sqlalchemy.exc import ArgumentError

from flowyard.domain.errors import InvalidInput
from flowyard.settings import display_url, url_password
from flowyard.store.ports import Store


def normalize_url(url: str) -> str:
    """Accept plain ``sqlite:///``/``postgresql://`` URLs and a bare file path; pick the async
    drivers."""
    if "://" not in url:
        return f"sqlite+aiosqlite:///{url}"
    scheme, rest = url.split("://", 1)
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg"):
        return f"postgresql+asyncpg://{rest}"
    raise InvalidInput(f"unsupported database URL scheme {scheme!r} (use sqlite or postgresql)")


def open_store(
    url: str, *, pool_size: int = 10, pooler: str = "none", listen_url: str | None = None
) -> Store:
    """A store for ``url`` (not yet migrated); a URL that does not parse (a port that is
    not a number, an unclosed ``[``, a bad query parameter) is :class:`InvalidInput`, named
    without its password. ``pooler``/``listen_url``: PostgreSQL behind PgBouncer in
    transaction mode (docs/deployment.md)."""
    try:
        return _open_store(
            normalize_url(url),
            pool_size,
            pooler,
            normalize_url(listen_url) if listen_url else None,
        )
    except (ArgumentError, ValueError, TypeError) as exc:
        reason = str(exc)
        for given in (url, listen_url or ""):
            password = url_password(given)
            if password and (password in reason or unquote(password) in reason):
                reason = exc.__class__.__name__
        raise InvalidInput(f"invalid database URL {display_url(url)}: {reason}") from None


def _open_store(url: str, pool_size: int, pooler: str, listen_url: str | None) -> Store:
    if url.startswith("sqlite"):
        from flowyard.store.sqlite import SqliteStore

        if pooler != "none" or listen_url:
            raise InvalidInput(
                "FLOWYARD_DB_POOLER and FLOWYARD_DB_LISTEN_URL are for PostgreSQL; "
                "the database is SQLite"
            )
        return SqliteStore.open(url)
    try:
        from flowyard.store.postgres import PostgresStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InvalidInput(
            "PostgreSQL needs the 'postgres' extra: pip install flowyard[postgres]"
        ) from exc
    return PostgresStore.open(url, pool_size=pool_size, pooler=pooler, listen_url=listen_url)
