"""Sessions end at their maximum age (``FLOWYARD_SESSION_MAX_AGE_S``) however often they are
refreshed, and ended or expired refresh tokens do not pile up in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import sqlalchemy as sa

from contract.helpers import raw_connection
from flowyard.bootstrap import Container, build
from flowyard.domain.auth import Role
from flowyard.settings import Settings
from flowyard.store.schema import refresh_tokens
from support.auth import PASSWORD
from support.clock import FakeClock

API = "/api/v1"
MAX_AGE_S = 200


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


async def login(anon: httpx.AsyncClient, username: str) -> dict[str, Any]:
    response = await anon.post(
        f"{API}/auth/token", data={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(anon: httpx.AsyncClient, token: str) -> httpx.Response:
    return await anon.post(f"{API}/auth/refresh", json={"refresh_token": token})


async def token_rows(container: Container) -> list[tuple[str, bool, bool]]:
    """(family, used, revoked) of every stored refresh token."""
    async with raw_connection(container.settings.db_url) as conn:
        rows = await conn.execute(
            sa.select(refresh_tokens).order_by(refresh_tokens.c.family_id, refresh_tokens.c.id)
        )
        return sorted((r.family_id, r.used_at is not None, r.revoked_at is not None) for r in rows)


async def test_a_session_ends_at_its_maximum_age(
    anon: httpx.AsyncClient, container: Container
) -> None:
    """The session starts 150 s ago; PyJWT checks ``exp`` and ``iat`` against the real
    clock, so the service's clock moves past the session's end while the real one has not
    reached it: the service's own check refuses the refresh."""
    container.auth.session_max_age_s = MAX_AGE_S
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=150)
    clock = FakeClock(start)
    container.auth.clock = clock
    await container.auth.create_user("gus", PASSWORD, Role.VIEWER)
    first = await login(anon, "gus")
    clock.advance(30)
    rotated = await refresh(anon, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    pair = rotated.json()
    # No token of the session outlives it, in its claims or in the store; the session's
    # start travels along.
    session_end = start + timedelta(seconds=MAX_AGE_S)
    for token in (pair["access_token"], pair["refresh_token"]):
        assert claims(token)["exp"] <= int(session_end.timestamp())
        assert claims(token)["auth_time"] == int(start.timestamp())
    async with raw_connection(container.settings.db_url) as conn:
        latest = sa.select(sa.func.max(refresh_tokens.c.expires_at))
        assert (await conn.execute(latest)).scalar_one() == session_end
    clock.advance(MAX_AGE_S)
    too_old = await refresh(anon, pair["refresh_token"])
    assert too_old.status_code == 401
    # The same answer as a refresh token the store holds expired.
    assert too_old.json()["detail"] == "refresh token revoked or expired"
    assert too_old.headers["www-authenticate"] == "Bearer"


async def test_the_maximum_age_is_a_setting(db_url: str) -> None:
    settings = Settings(db_url=db_url, workers=0, load_plugins=False, session_max_age_s=3600)
    built = await build(settings)
    try:
        assert built.auth.session_max_age_s == 3600
        assert Settings(db_url=db_url).session_max_age_s == 30 * 24 * 3600
    finally:
        await built.close()


async def test_ended_and_expired_refresh_tokens_are_pruned(
    anon: httpx.AsyncClient, container: Container
) -> None:
    await container.auth.create_user("ivy", PASSWORD, Role.VIEWER)
    ended = await login(anon, "ivy")
    bearer = {"Authorization": f"Bearer {ended['access_token']}"}
    body = {"refresh_token": ended["refresh_token"]}
    assert (await anon.post(f"{API}/auth/logout", json=body, headers=bearer)).status_code == 204
    live = await login(anon, "ivy")
    assert [revoked for _, _, revoked in await token_rows(container)].count(True) == 1
    # The next rotation prunes the ended session's token; the live session's used token
    # stays (presenting it again must still revoke the family).
    container.auth.prune_interval_s = 0
    rotated = await refresh(anon, live["refresh_token"])
    assert rotated.status_code == 200
    family = claims(live["refresh_token"])["fam"]
    assert await token_rows(container) == [(family, False, False), (family, True, False)]
    assert (await refresh(anon, live["refresh_token"])).status_code == 401  # reused
    assert (await refresh(anon, rotated.json()["refresh_token"])).status_code == 401
