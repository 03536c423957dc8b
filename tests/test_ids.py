"""Ids: prefixed, unique and in creation order."""

from kassa.ids import new_id


def test_ids_are_prefixed_unique_and_sorted() -> None:
    ids = [new_id("var") for _ in range(10_000)]
    assert all(i.startswith("var_") and len(i) == 30 for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
