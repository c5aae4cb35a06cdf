"""Authenticate test clients: an admin user and its bearer token."""

from __future__ import annotations

import uuid

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.domain.errors import NotFound

#: Password of the users the tests create.
PASSWORD = "correct horse battery staple"
#: A 32-byte master key for test processes (hex).
SECRET_KEY = "11" * 32

#: The argon2id hash of PASSWORD, made once per test process (see :func:`token_for`).
_password_hash: list[str] = []


async def token_for(container: Container, username: str = "admin", role: Role = Role.ADMIN) -> str:
    """An access token of ``username`` (created with ``role`` unless it exists), of a new
    session (as a login makes, without the password check and its throttle).

    The user is written through the store with one argon2id hash of :data:`PASSWORD` made
    once per process by the container's own hashing (the production parameters): hashing it
    again for every test's admin cost ~0.17 s of CPU each, hundreds of times a run. Such a
    user logs in with PASSWORD like any other; the tests of creating users (the username and
    strength rules, a hash per user) call ``container.auth.create_user`` themselves."""
    try:
        user = await container.store.get_user_by_name(username)
    except NotFound:
        if not _password_hash:
            _password_hash.append(await container.auth.passwords.hash(PASSWORD))
        user = await container.store.create_user(
            f"usr_{uuid.uuid4().hex}", username, _password_hash[0], role, container.auth.clock()
        )
    return (await container.auth.issue_tokens(user)).access_token


async def auth_headers(
    container: Container, username: str = "admin", role: Role = Role.ADMIN
) -> dict[str, str]:
    """``Authorization: Bearer ...`` of ``username``."""
    return {"Authorization": f"Bearer {await token_for(container, username, role)}"}
