"""Fair shares between lanes of one priority: stride scheduling (decision 0032).

Each lane (a campaign, or ``""`` for runs outside campaigns) has a *pass*: the steps it was
given divided by its weight. A claim takes from the lane with the lowest pass first, so over
a drain a lane of weight 3 gets three steps for each step of a lane of weight 1, and no
lane waits for another to finish.

A lane that appears (a campaign just started, or back after its runs all waited) starts at
the *virtual time* of its priority, the lowest pass among the lanes that have due steps: it
gets its share from now on, not the share it "missed" while it had nothing to run (which
would starve the others until it caught up). A lane that was served ahead of its share and
went idle keeps its pass until the others catch up.

Each worker process keeps its own passes: every worker splits its own claims by the
weights, so all workers together do too, without a counter shared by every claim. The
state is small (one float per lane with due steps) and the math pure, like the quota
buckets' (``domain/quotas.py``): the store asks, claims, then tells.
"""

from __future__ import annotations

from collections.abc import Mapping


class FairShare:
    """The passes of the lanes of each priority, and the order to claim from them in."""

    def __init__(self) -> None:
        self._passes: dict[int, dict[str, float]] = {}
        self._clock: dict[int, float] = {}

    def order(self, priority: int, weights: Mapping[str, int]) -> list[str]:
        """The lanes of ``priority`` that have due steps (``weights``: lane -> weight), in
        the order to claim from: lowest pass first, ties by lane."""
        passes = self._passes.setdefault(priority, {})
        known = [passes[lane] for lane in weights if lane in passes]
        clock = max(self._clock.get(priority, 0.0), min(known, default=0.0))
        for lane in weights:
            passes[lane] = max(passes.get(lane, clock), clock)
        self._clock[priority] = clock
        # A lane without due steps whose pass the clock has reached would come back at the
        # clock anyway: forget it (the state stays as small as the set of busy lanes).
        for lane in [lane for lane, p in passes.items() if lane not in weights and p <= clock]:
            del passes[lane]
        return sorted(weights, key=lambda lane: (passes[lane], lane))

    def served(self, priority: int, lane: str, steps: int, weight: int) -> None:
        """``steps`` were claimed from ``lane`` (of ``weight``)."""
        passes = self._passes.setdefault(priority, {})
        passes[lane] = passes.get(lane, self._clock.get(priority, 0.0)) + steps / max(weight, 1)

    def passes(self, priority: int) -> dict[str, float]:
        """The passes of ``priority``'s lanes (for tests and diagnostics)."""
        return dict(self._passes.get(priority, {}))
