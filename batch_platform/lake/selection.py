"""Which partitions a read covers: a list of keys, a key range, or everything."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import dagster as dg
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, GreaterThanOrEqual, LessThanOrEqual
from pyspark.sql import Column
from pyspark.sql import functions as F

from batch_platform.lake.commit import partition_filter
from batch_platform.lake.tables import LakeTable

PartitionSelection = Sequence[str] | dg.PartitionKeyRange | None


def iceberg_filter(table: LakeTable, partitions: PartitionSelection) -> BooleanExpression:
    """The scan filter: a range stays a range (a three-year history is two bounds, not a thousand values)."""
    if partitions is None or table.partition_column is None:
        return AlwaysTrue()
    if isinstance(partitions, dg.PartitionKeyRange):
        column = table.partition_column
        start, end = date.fromisoformat(partitions.start), date.fromisoformat(partitions.end)
        # pyiceberg's expressions are pydantic models whose generated signature mypy misreads.
        return And(GreaterThanOrEqual(column, start), LessThanOrEqual(column, end))  # type: ignore[call-arg,arg-type]
    return partition_filter(table, list(partitions))


def spark_filter(table: LakeTable, partitions: PartitionSelection) -> Column | None:
    """The same selection as a Spark predicate, for rows read from files Spark did not plan itself."""
    if partitions is None or table.partition_column is None:
        return None
    column = F.col(table.partition_column)
    if isinstance(partitions, dg.PartitionKeyRange):
        return column.between(F.lit(date.fromisoformat(partitions.start)), F.lit(date.fromisoformat(partitions.end)))
    return column.isin([date.fromisoformat(k) for k in partitions])
