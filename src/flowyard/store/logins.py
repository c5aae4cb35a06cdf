"""Failed logins per throttle key, shared by every API process (the policy that reads them
is :mod:`flowyard.security.throttle`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import LoginFailures
from flowyard.store.base import SqlBase
from flowyard.store.schema import login_failures


class LoginOps(SqlBase):
    """Counters of failed logins; never audited (the login request's entry says what
    happened)."""

    async def claim_login_attempt(
        self,
        keys: Sequence[str],
        now: datetime,
        *,
        forget_before: datetime,
        wait: Callable[[Sequence[LoginFailures]], float],
    ) -> float:
        """Let one login attempt through, or not, atomically across processes.

        The keys' rows are locked (created first when missing, so two first attempts also
        serialise); a row whose last attempt is older than ``forget_before`` counts as none.
        ``wait`` (the throttle's policy) gets them in ``keys`` order: a wait > 0 is returned
        and nothing changes; else every key counts the attempt as a failure (until
        :meth:`forgive_login_attempt` takes it back) at ``now``, and 0.0 is returned.
        Counting before the password is checked is what stops parallel guesses from all
        passing one check. Not audited: the login request's entry says what happened."""
        ordered = sorted(set(keys))

        async def fn(conn: AsyncConnection) -> float:
            for key in ordered:
                await conn.execute(
                    self._insert_ignore(login_failures).values(
                        key=key, failures=0, first_at=now, last_at=now
                    )
                )
            rows = {
                r.key: r
                for r in await conn.execute(
                    sa.select(login_failures)
                    .where(login_failures.c.key.in_(ordered))
                    .order_by(login_failures.c.key)
                    .with_for_update()
                )
            }
            counted = {
                key: (
                    LoginFailures(key, r.failures, r.first_at, r.last_at)
                    if (r := rows.get(key)) is not None and r.last_at >= forget_before
                    else LoginFailures(key, 0, now, now)
                )
                for key in ordered
            }
            seconds = wait([counted[key] for key in keys])
            if seconds > 0:
                return seconds
            for key in ordered:
                await conn.execute(
                    login_failures.update()
                    .where(login_failures.c.key == key)
                    .values(
                        failures=counted[key].failures + 1,
                        first_at=counted[key].first_at,
                        last_at=now,
                    )
                )
            return 0.0

        return await self._tx(fn)

    async def forgive_login_attempt(self, clear: Sequence[str], discount: Sequence[str]) -> None:
        """A claimed attempt succeeded: forget ``clear``'s failures and take the attempt back
        from ``discount``'s (a row left without failures is deleted). The rows are locked
        first, in sorted key order as :meth:`claim_login_attempt` locks them: a login that
        succeeds while another from the same address claims would otherwise deadlock (each
        holding one key and waiting for the other)."""
        ordered = sorted({*clear, *discount})

        async def fn(conn: AsyncConnection) -> None:
            await conn.execute(
                sa.select(login_failures.c.key)
                .where(login_failures.c.key.in_(ordered))
                .order_by(login_failures.c.key)
                .with_for_update()
            )
            if clear:
                await conn.execute(login_failures.delete().where(login_failures.c.key.in_(clear)))
            if discount:
                where = login_failures.c.key.in_(discount)
                await conn.execute(
                    login_failures.delete().where(where, login_failures.c.failures <= 1)
                )
                await conn.execute(
                    login_failures.update()
                    .where(where)
                    .values(failures=login_failures.c.failures - 1)
                )

        await self._tx(fn)

    async def login_failures(self, keys: Sequence[str]) -> list[LoginFailures]:
        """The stored rows of ``keys`` (for operators and tests; forgotten rows included)."""
        query = sa.select(login_failures).where(login_failures.c.key.in_(list(keys)))

        async def fn(conn: AsyncConnection) -> list[LoginFailures]:
            return [
                LoginFailures(r.key, r.failures, r.first_at, r.last_at)
                for r in await conn.execute(query.order_by(login_failures.c.key))
            ]

        return await self._tx(fn, write=False)

    async def prune_login_failures(self, before: datetime) -> int:
        """Delete the rows whose last attempt is older than ``before``; how many."""

        async def fn(conn: AsyncConnection) -> int:
            deleted = await conn.execute(
                login_failures.delete().where(login_failures.c.last_at < before)
            )
            return int(deleted.rowcount or 0)

        return await self._tx(fn)
