"""The campaign spool's lines: fields in PostgreSQL's COPY text format, read back as given."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowyard.domain.campaigns import (
    CampaignItem,
    SpooledItems,
    copy_field,
    from_copy_field,
)

texts = st.one_of(st.none(), st.text(alphabet=st.sampled_from("ab\\\t\n\rN.é\u2028 ")))


@given(texts)
def test_a_copy_field_reads_back_as_written(value: str | None) -> None:
    field = copy_field(value)
    assert not {"\t", "\n", "\r"} & set(field)
    assert from_copy_field(field) == value


@given(st.lists(st.tuples(st.text(min_size=1), texts, texts), max_size=5))
def test_spooled_items_are_the_items(rows: list[tuple[str, str | None, str | None]]) -> None:
    items = [CampaignItem(input_json, key, concurrency) for input_json, key, concurrency in rows]
    spooled = SpooledItems.of(items)
    assert list(spooled) == items
    assert len(spooled) == len(items) and list(spooled[1:]) == items[1:]
    assert all(line.count("\t") == 2 for line in spooled.lines)
