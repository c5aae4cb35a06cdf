"""Passwords: strength (zxcvbn) and argon2 hashing off the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import zxcvbn
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from flowyard.domain.errors import InvalidInput, Problem

#: Shorter passwords are refused before they are scored.
MIN_LENGTH = 8
#: zxcvbn refuses longer input; the first 72 characters are scored (a longer password is at
#: least that strong).
SCORED_LENGTH = 72
#: Words every flowyard password is checked against besides the user's own name.
CONTEXT_WORDS = ("flowyard",)


def check_strength(
    password: str, *, min_score: int, user_inputs: Sequence[str] = (), pointer: str = "/password"
) -> None:
    """InvalidInput (422) when ``password`` is shorter than :data:`MIN_LENGTH` or its zxcvbn
    score (0-4, with ``user_inputs`` such as the username as known words) is below
    ``min_score``; the problem carries zxcvbn's warning and suggestions."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(
            "password too short",
            [Problem(pointer, f"at least {MIN_LENGTH} characters", "too_short")],
        )
    if min_score <= 0:
        return
    words = [w for w in (*user_inputs, *CONTEXT_WORDS) if w]
    result = zxcvbn.zxcvbn(password[:SCORED_LENGTH], user_inputs=words)
    score = int(result["score"])
    if score >= min_score:
        return
    feedback = result.get("feedback") or {}
    hints = [str(feedback.get("warning") or ""), *(str(s) for s in feedback.get("suggestions", []))]
    why = " ".join(h.rstrip(".") + "." for h in hints if h) or "It is easy to guess."
    raise InvalidInput(
        f"password too weak: {why}",
        [
            Problem(
                pointer,
                f"strength {score} of 4, at least {min_score} needed (zxcvbn): {why}",
                "too_weak",
            )
        ],
    )


class PasswordHashing:
    """argon2id hashing and verification in worker threads (argon2 releases the GIL), at most
    ``concurrency`` at once: a login costs ~50 ms of CPU and 64 MiB, and must neither stall
    the event loop nor let a burst of logins take all the memory."""

    def __init__(
        self, concurrency: int | None = None, *, hasher: PasswordHasher | None = None
    ) -> None:
        # ``hasher``: other argon2 parameters (the tests of login throttling, which count
        # failed checks, not their cost); by default argon2-cffi's RFC 9106 profile.
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 1)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        """A new argon2id hash of ``password``."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches. Without a hash (no such user) the password is
        verified against a dummy hash all the same: the answer takes as long either way."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash(os.urandom(16).hex())
            password_hash = self._dummy
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False
