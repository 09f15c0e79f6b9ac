"""Declarations of lake tables: an Iceberg table described in code beside the asset that writes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import dagster as dg
import pyarrow as pa

# pyiceberg retries a commit that lost a race by itself; these table properties make it patient enough for many
# writers on one table (its defaults lost about 17% of commits with 8 writers on this machine).
DEFAULT_TABLE_PROPERTIES: Mapping[str, str] = {
    "commit.retry.num-retries": "20",
    "commit.retry.min-wait-ms": "50",
    "commit.retry.max-wait-ms": "2000",
    "commit.retry.total-timeout-ms": "600000",
    "write.parquet.compression-codec": "zstd",
    # Every commit writes a new metadata JSON. Keep the newest 25 in the metadata log and delete the ones that fall
    # out of it (pyiceberg 0.12 and Spark both honour these): enough for a reader that loaded a pointer a few
    # commits ago or an operator who wants yesterday's file, and no ever-growing metadata folder. Old snapshots are
    # kept or expired by maintenance, not by these files.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "25",
}


@dataclass(frozen=True)
class LakeTable:
    """An Iceberg table declared in code.

    The asset key of the asset that writes it is ``[namespace, name]``: table ``core.payments`` is asset
    ``core/payments``. ``partition_column`` names a ``date`` column that holds the daily partition key; the table
    is partitioned by it (identity transform) and every write replaces whole partitions. A table without a
    partition column is replaced whole on each write.
    """

    namespace: str
    name: str
    schema: pa.Schema
    partition_column: str | None = None
    description: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.namespace.isidentifier() or not self.name.isidentifier():
            raise ValueError(f"table namespace and name must be identifiers, got {self.namespace!r}.{self.name!r}")
        if self.partition_column is not None:
            if self.partition_column not in self.schema.names:
                raise ValueError(f"{self.identifier}: partition column {self.partition_column!r} is not in the schema")
            part_type = self.schema.field(self.partition_column).type
            if part_type != pa.date32():
                raise ValueError(
                    f"{self.identifier}: partition column {self.partition_column!r} must be date32, got {part_type}"
                )

    @property
    def identifier(self) -> str:
        return f"{self.namespace}.{self.name}"

    @cached_property
    def asset_key(self) -> dg.AssetKey:  # built once: a location of thousands of tables asks for it often
        return dg.AssetKey([self.namespace, self.name])

    @property
    def table_properties(self) -> dict[str, str]:
        return {**DEFAULT_TABLE_PROPERTIES, **self.properties}

    @property
    def pool(self) -> str:
        """The Dagster concurrency pool of this table's writers: one writer per table at a time by default."""
        return f"iceberg-{self.namespace}-{self.name}"
