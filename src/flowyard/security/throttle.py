"""Login throttling: exponential backoff per (username, client address) and per client
address, counted in the database so that every API process agrees.

Why backoff and not lockout: a lockout per username lets anyone lock anyone out. Here the
counters are keyed by the client address too, so failures from one address never slow
another address down, and every wait is capped (``backoff_max_s``, a few seconds): whoever
stops failing gets in at most that long after their last attempt, whatever was tried before.

How an attempt is decided (:meth:`LoginThrottle.claim`): the keys' rows are locked, the
policy computes the wait from the failures counted and the time of the last attempt let
through; a waiting attempt is refused (429, ``Retry-After``) **before** the password is
checked, so it costs no argon2 work and reveals nothing, not even whether the password was
right. An attempt let through counts as a failure at once and is taken back if the password
was right: parallel guesses cannot all pass one check. A correct password while throttled is
therefore refused like any other until the wait is over (never more than ``backoff_max_s``).

A client address is counted as :func:`~flowyard.security.addresses.client_group` spells it:
one spelling per address, and an IPv6 client's whole network (a /64 by default), since one
party holds that many addresses.

The pair key (username, address) stops guessing one account; the address key (any username)
stops spraying one password over many accounts. Both are capped alike, so a guesser from one
address gets at most one try per ``backoff_max_s`` once past the free tries. The price: other
users behind the same address (a NAT, a proxy not listed in ``trusted_proxies``) share the
address key, and an attacker who keeps failing from that address keeps them waiting up to
``backoff_max_s`` per attempt. Every refusal and failure is in the audit log (``auth.token``,
``throttled`` / ``unauthenticated``) so an operator can block such an address upstream.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flowyard.domain.auth import LoginFailures
from flowyard.security.addresses import DEFAULT_IPV6_PREFIX, client_group
from flowyard.store.ports import LoginStore

#: Throttle keys carry at most this much of a client address (audit columns hold 64).
_ADDRESS_CHARS = 64


class LoginThrottled(Exception):
    """Too many failed logins from this client (for this username): retry later (HTTP 429)."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after_s))
        super().__init__(f"too many failed logins; retry after {self.retry_after}s")


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How long an attempt waits after failures (the settings of the same names)."""

    #: Failures of one username from one address that cost no wait.
    free_failures: int = 3
    #: Failures from one address (any username) that cost no wait.
    free_failures_per_address: int = 20
    #: The first wait; it doubles with every further failure...
    backoff_base_s: float = 1.0
    #: ...up to this (0: no throttling at all).
    backoff_max_s: float = 5.0
    #: Counts are forgotten this long after a key's last attempt.
    forget_after_s: float = 900.0
    #: IPv6 clients are counted per network of this many bits (one party's /64).
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX

    @property
    def enabled(self) -> bool:
        """False when ``backoff_max_s`` is 0."""
        return self.backoff_max_s > 0

    def backoff_s(self, failures: int, free: int) -> float:
        """The wait after ``failures`` (counting unresolved attempts) with ``free`` free."""
        if failures < free:
            return 0.0
        doublings = min(failures - free, 32)  # 2**32 s is past any cap: no overflow
        return float(min(self.backoff_base_s * 2**doublings, self.backoff_max_s))

    def wait_s(self, pair: LoginFailures, address: LoginFailures, now: datetime) -> float:
        """Seconds until an attempt with these counts may go through (0: now)."""
        waits = (
            (pair, self.backoff_s(pair.failures, self.free_failures)),
            (address, self.backoff_s(address.failures, self.free_failures_per_address)),
        )
        return max(
            [
                0.0,
                *(
                    (counts.last_at + timedelta(seconds=backoff) - now).total_seconds()
                    for counts, backoff in waits
                    if backoff > 0
                ),
            ]
        )


def pair_key(username: str, address: str) -> str:
    """The key of one username from one client address (the name hashed: any string a client
    sends fits the column, and none is stored as typed)."""
    digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"user:{digest}@{address[:_ADDRESS_CHARS]}"


def address_key(address: str) -> str:
    """The key of one client address, whatever the username."""
    return f"addr:{address[:_ADDRESS_CHARS]}"


class LoginThrottle:
    """Claims login (and password change) attempts against the database's counters."""

    def __init__(
        self,
        store: LoginStore,
        policy: ThrottlePolicy,
        *,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self._monotonic = monotonic
        self._pruned_at: float | None = None

    async def claim(self, username: str, address: str) -> None:
        """Let an attempt through (it counts as a failure until :meth:`succeeded`), or raise
        :class:`LoginThrottled` with the seconds to wait."""
        if not self.policy.enabled:
            return
        now = self.clock()
        address = client_group(address, self.policy.ipv6_prefix)
        keys = [pair_key(username, address), address_key(address)]

        def wait(counts: Sequence[LoginFailures]) -> float:
            pair, addr = counts
            return self.policy.wait_s(pair, addr, now)

        forget_before = now - timedelta(seconds=self.policy.forget_after_s)
        seconds = await self.store.claim_login_attempt(
            keys, now, forget_before=forget_before, wait=wait
        )
        await self._prune(forget_before)
        if seconds > 0:
            raise LoginThrottled(seconds)

    async def succeeded(self, username: str, address: str) -> None:
        """The password was right: forget the pair's failures; the address keeps its own but
        for this attempt (a sprayer's hit must not wipe its slate)."""
        if not self.policy.enabled:
            return
        address = client_group(address, self.policy.ipv6_prefix)
        await self.store.forgive_login_attempt(
            [pair_key(username, address)], [address_key(address)]
        )

    async def _prune(self, before: datetime) -> None:
        """Drop forgotten rows now and then (a tenth of the forget window, at most once a
        minute per process): they count as none anyway, this only bounds the table."""
        now = self._monotonic()
        every = max(60.0, self.policy.forget_after_s / 10)
        if self._pruned_at is not None and now - self._pruned_at < every:
            return
        self._pruned_at = now
        await self.store.prune_login_failures(before)
