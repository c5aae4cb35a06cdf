"""Ids: the fast encoding gives exactly the digits of the plain one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowyard.domain import ids


@given(st.integers(0, 2**55 - 1), st.binary(min_size=10, max_size=10))
def test_the_fast_encoding_is_the_plain_one(micros: int, random10: bytes) -> None:
    rand = int.from_bytes(random10, "big") >> 5
    assert ids._ulid(micros, random10) == ids._encode(micros, 11) + ids._encode(rand, 15)


def test_bulk_run_ids_are_fresh_and_time_ordered_by_their_first_digits() -> None:
    before = ids.new_run_id()
    bulk = ids.new_run_ids(1000)
    assert len(set(bulk)) == 1000
    assert all(r.startswith("run_") and len(r) == 30 for r in bulk)
    assert before[:15] <= min(bulk)[:15]
    assert ids.new_run_ids(0) == []


def test_bulk_run_ids_sort_in_the_order_they_were_made() -> None:
    """Many ids are made per microsecond: each takes the next microsecond then, so a
    campaign's runs page in the order of its items."""
    bulk = ids.new_run_ids(20_000)
    assert bulk == sorted(bulk) and len(set(bulk)) == len(bulk)


def test_bulk_run_ids_carry_the_time_of_each_id_in_their_first_digits(monkeypatch) -> None:
    clock = iter([1_700_000_000_000_000_000 + 1_000 * k * 997 for k in range(50)])
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock))
    bulk = ids.new_run_ids(50)
    for k, run_id in enumerate(bulk):
        micros = 1_700_000_000_000_000 + k * 997
        assert run_id[4:15] == ids._encode(micros, 11)
        assert all(c in ids._ALPHABET for c in run_id[15:])
    assert bulk == sorted(bulk)
