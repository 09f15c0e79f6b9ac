"""The lake asset decorator: an asset whose key, pool and catalog metadata come from its table declaration."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from functools import lru_cache
from typing import Any

import dagster as dg
import pyarrow as pa

from batch_platform.compute import (
    COMPUTE_PROFILE_TAG,
    DEFAULT_PROFILE,
    ENGINE_TAG,
    SPARK_ENGINE,
    ComputeProfile,
    get_profile,
    profile_tags,
)
from batch_platform.lake.tables import LakeTable


def column_schema(table: LakeTable) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[_column(f.name, f.type, f.nullable, f.name == table.partition_column) for f in table.schema]
    )


@lru_cache(maxsize=4096)
def _column(name: str, type_: pa.DataType, nullable: bool, partition: bool) -> dg.TableColumn:
    """One column's entry, shared by the tables that have it (immutable; thousands of tables repeat a few)."""
    return dg.TableColumn(
        name=name,
        type=str(type_),
        constraints=dg.TableColumnConstraints(nullable=nullable),
        tags={"partition": ""} if partition else {},
    )


def lake_asset(
    table: LakeTable,
    *,
    partitions_def: dg.PartitionsDefinition | None = None,
    deps: Iterable[dg.CoercibleToAssetDep] = (),
    kinds: Collection[str] = ("iceberg",),
    group_name: str | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
    op_tags: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    owners: Iterable[str] = (),
    compute: str | ComputeProfile = DEFAULT_PROFILE,
    **asset_kwargs: Any,
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """Declare the asset that writes ``table``.

    The asset key is the table's ``namespace/name``, its group defaults to the namespace, and its writers share
    the table's concurrency pool, so two runs never write the same table (hence the same partition) at once.

    An asset of kind ``spark`` is tagged as a Spark step, so its runs count against the instance's Spark run limit.

    ``compute`` names its compute profile (batch_platform.compute). It goes on the op tags, where dagster-k8s and
    ``SparkResource.session_for`` read it for every execution of the asset (UI materializations, backfills,
    jobs), and on the asset tags, so the catalog can be filtered by profile.
    """
    profile = get_profile(compute)
    compute_tags = profile_tags(profile)
    if SPARK_ENGINE in kinds:
        compute_tags[ENGINE_TAG] = SPARK_ENGINE
    clashes = sorted(set(compute_tags) & set(op_tags or {})) + sorted({COMPUTE_PROFILE_TAG} & set(tags or {}))
    if clashes:
        raise ValueError(f"{table.identifier}: set the compute profile with compute=, not the tags {clashes}")
    if (partitions_def is None) != (table.partition_column is None):
        raise ValueError(
            f"{table.identifier}: a partitioned table needs a partitioned asset and an unpartitioned one not "
            f"(partition column {table.partition_column!r}, partitions_def {partitions_def!r})"
        )
    return dg.asset(
        key=table.asset_key,
        description=table.description or None,
        partitions_def=partitions_def,
        deps=list(deps),
        kinds=set(kinds),
        group_name=group_name or table.namespace,
        backfill_policy=backfill_policy,
        pool=table.pool,
        op_tags={**dict(op_tags or {}), **compute_tags},
        tags={**dict(tags or {}), COMPUTE_PROFILE_TAG: profile.name},
        owners=list(owners),
        metadata={
            "iceberg/table": table.identifier,
            "dagster/table_name": table.identifier,
            "dagster/column_schema": column_schema(table),
            "iceberg/partition_column": table.partition_column or "",
        },
        **asset_kwargs,
    )
