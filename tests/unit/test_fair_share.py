"""The fair share between lanes of one priority (stride scheduling, decision 0032): counts
follow the weights, a lane that appears late starts level with the others instead of
collecting the share it missed, and idle lanes are forgotten; and the quota keys of a
campaign's limits."""

from __future__ import annotations

from collections import Counter

import pytest

from flowyard.domain.fairness import FairShare
from flowyard.domain.quotas import campaign_item_key, campaign_key, check_key, is_campaign_item_key


def drive(fair: FairShare, weights: dict[str, int], claims: int, batch: int) -> Counter[str]:
    """``claims`` claims of ``batch`` steps, each from the first lane in order (every lane
    always has more due)."""
    got: Counter[str] = Counter()
    for _ in range(claims):
        lane = fair.order(3, weights)[0]
        fair.served(3, lane, batch, weights[lane])
        got[lane] += batch
    return got


def test_lanes_share_by_their_weights() -> None:
    got = drive(FairShare(), {"a": 1, "b": 3}, claims=400, batch=8)
    assert got["a"] + got["b"] == 3200
    assert 3 * got["a"] - 8 * 3 <= got["b"] <= 3 * got["a"] + 8 * 3
    assert got["a"] >= 790  # a is served all along, not after b is done


def test_a_lane_alone_takes_everything_and_order_is_stable() -> None:
    fair = FairShare()
    assert drive(fair, {"": 1}, claims=5, batch=4) == Counter({"": 20})
    assert fair.order(3, {"x": 1, "y": 1}) == ["x", "y"]  # ties by lane


def test_a_late_lane_starts_at_the_clock_not_at_zero() -> None:
    fair = FairShare()
    drive(fair, {"a": 1}, claims=100, batch=10)  # a alone: pass 1000
    got = drive(fair, {"a": 1, "b": 1}, claims=20, batch=10)
    # b does not get 100 claims in a row to "catch up": they alternate from the start.
    assert got == Counter({"a": 100, "b": 100})


def test_an_idle_lane_is_forgotten_and_a_debtor_kept() -> None:
    fair = FairShare()
    drive(fair, {"a": 1, "b": 1}, claims=10, batch=10)
    fair.served(3, "b", 50, 1)  # b took a large batch, then went idle
    drive(fair, {"a": 1}, claims=2, batch=10)
    assert "b" in fair.passes(3)  # ahead of the clock: it keeps its lead
    drive(fair, {"a": 1}, claims=10, batch=10)
    assert "b" not in fair.passes(3)  # the clock passed it: nothing to remember


def test_priorities_are_separate() -> None:
    fair = FairShare()
    fair.order(6, {"": 1})
    fair.served(6, "", 100, 1)
    assert fair.order(3, {"c": 1, "": 1}) == ["", "c"]
    assert fair.passes(6) == {"": 100.0}


def test_campaign_quota_keys() -> None:
    cid = "cmp_" + "0" * 26
    assert check_key(campaign_key(cid)) == "campaign:" + cid
    per_key = campaign_item_key(cid, "Ünïcode tenant / with spaces")
    assert check_key(per_key) == per_key and len(per_key) <= 80
    assert per_key == campaign_item_key(cid, "Ünïcode tenant / with spaces")
    assert per_key != campaign_item_key(cid, "another")
    assert is_campaign_item_key(per_key) and not is_campaign_item_key(campaign_key(cid))
    for bad in ("campaign:nope", f"campaign:{cid}:xyz", f"campaign:{cid}/" + "0" * 16):
        with pytest.raises(ValueError, match="not a quota key"):
            check_key(bad)
