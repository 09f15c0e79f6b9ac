"""A lake table's rows as a multiset, to compare two lakes (a recovered one with a clean rebuild, a restated one with
a from-scratch one) whatever their file layout and row order."""

from __future__ import annotations

from collections import Counter

from batch_platform.lake import IcebergLakeResource, LakeTable


def _hashable(value: object) -> object:
    """Lists and structs (the book's carried installments) as tuples, so that a row can be counted."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in sorted(value.items()))
    return value


def table_rows(lake: IcebergLakeResource, table: LakeTable) -> Counter[tuple[object, ...]]:
    data = lake.read_arrow(table)
    columns = sorted(data.column_names)
    return Counter(zip(*(map(_hashable, data[c].to_pylist()) for c in columns), strict=True))
