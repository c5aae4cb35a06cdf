"""Authenticate test clients: an admin user and its bearer token."""

from __future__ import annotations

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.domain.errors import NotFound

#: Password of the users the tests create.
PASSWORD = "correct horse battery staple"
#: A 32-byte master key for test processes (hex).
SECRET_KEY = "11" * 32


async def token_for(container: Container, username: str = "admin", role: Role = Role.ADMIN) -> str:
    """An access token of ``username`` (created with ``role`` unless it exists), of a new
    session (as a login makes, without the password check and its throttle)."""
    try:
        user = await container.store.get_user_by_name(username)
    except NotFound:
        user = await container.auth.create_user(username, PASSWORD, role)
    return (await container.auth.issue_tokens(user)).access_token


async def auth_headers(
    container: Container, username: str = "admin", role: Role = Role.ADMIN
) -> dict[str, str]:
    """``Authorization: Bearer ...`` of ``username``."""
    return {"Authorization": f"Bearer {await token_for(container, username, role)}"}
