"""Open a store from a URL."""

from __future__ import annotations

from flowyard.domain.errors import InvalidInput
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


def open_store(url: str, *, pool_size: int = 10) -> Store:
    """A store for ``url`` (not yet migrated)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        from flowyard.store.sqlite import SqliteStore

        return SqliteStore.open(url)
    try:
        from flowyard.store.postgres import PostgresStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InvalidInput(
            "PostgreSQL needs the 'postgres' extra: pip install flowyard[postgres]"
        ) from exc
    return PostgresStore.open(url, pool_size=pool_size)
