"""Spark side of the lake: executors write Parquet into a staging folder, pyiceberg commits those files.

The driver never collects rows: it lists the staged files (a metadata call) and hands their paths to the commit,
which reads only their footers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from py4j.protocol import Py4JJavaError
from pyiceberg.io import FileIO
from pyiceberg.table import Table
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from batch_platform.lake.errors import DataContractError, UnsupportedScanError
from batch_platform.lake.schema import arrow_schema_of, not_null_columns
from batch_platform.lake.selection import PartitionSelection, iceberg_filter, spark_filter
from batch_platform.lake.tables import LakeTable

# Spark writes each partition value into its own folder, named after this helper column; the real partition column
# stays inside the files (partitionBy on the real column would drop it from them).
_PART_DIR_COLUMN = "__lake_partition"
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def to_spark_uri(uri: str) -> str:
    """Spark reaches S3 through the s3a connector; pyiceberg and the catalog name the same objects s3://."""
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


def from_spark_uri(uri: str) -> str:
    if uri.startswith("s3a://"):
        return "s3://" + uri[len("s3a://") :]
    if uri.startswith("file:/") and not uri.startswith("file:///"):
        return "file:///" + uri[len("file:/") :].lstrip("/")
    return uri


def spark_schema(schema: pa.Schema) -> StructType:
    return from_arrow_schema(schema, prefer_timestamp_ntz=True)


def conform(df: DataFrame, table: LakeTable) -> DataFrame:
    """Select the declared columns in declared order, cast to the declared types; refuse missing or extra columns."""
    declared = spark_schema(table.schema)
    present = set(df.columns)
    missing = [f.name for f in declared.fields if f.name not in present]
    extra = sorted(present - {f.name for f in declared.fields})
    if missing or extra:
        raise DataContractError(
            f"{table.identifier}: DataFrame does not match the table declaration"
            + (f"; missing columns {missing}" if missing else "")
            + (f"; undeclared columns {extra}" if extra else "")
        )
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in declared.fields])


@dataclass(frozen=True)
class StagedFiles:
    """Parquet files written for one write, not yet part of any table."""

    staging_uri: str
    files: tuple[str, ...]
    partition_values: tuple[str, ...]
    observed: Mapping[str, Any] = field(default_factory=dict)  # the ``observe`` metrics over the rows written


def _list_parquet_files(spark: SparkSession, uri: str) -> list[str]:
    """List files through Spark's own Hadoop file system, so local, s3a and others list the same way."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return []
    found = []
    it = fs.listFiles(path, True)
    while it.hasNext():
        name = it.next().getPath().toString()
        if name.endswith(".parquet"):
            found.append(name)
    return sorted(found)


def stage(
    spark: SparkSession,
    df: DataFrame,
    table: LakeTable,
    staging_uri: str,
    partition_keys: Sequence[str] | None,
    observe: Sequence[Column] = (),
) -> StagedFiles:
    """Write the DataFrame as Parquet files holding one partition value each, and check those values.

    Rows whose partition value is not one of the partitions being written are refused: committing them would
    add rows to a partition without replacing it, and so duplicate them.

    ``observe`` are named aggregate columns Spark computes over the rows as it writes them (``DataFrame.observe``):
    metrics of exactly the rows staged, with no second read of the files.
    """
    conformed = conform(df, table)
    observation = Observation() if observe else None
    if observation is not None:
        conformed = conformed.observe(observation, *observe)
    staged = _write(spark, conformed, table, staging_uri, partition_keys)
    return replace(staged, observed=_observed(observation)) if observation is not None else staged


def _observed(observation: Observation) -> dict[str, Any]:
    """The metrics observed by the write, or none when Spark lost them: writing an empty DataFrame by partition
    (repartition, then partitionBy) optimizes the observation away and ``get`` fails on Spark 4.1. A caller finds
    no metric then and must compute what it wanted from the files."""
    try:
        return observation.get
    except Py4JJavaError:
        return {}


def _write(
    spark: SparkSession, conformed: DataFrame, table: LakeTable, staging_uri: str, partition_keys: Sequence[str] | None
) -> StagedFiles:
    target = to_spark_uri(staging_uri)
    # Spark's writer does not read Iceberg table properties: apply the table's Parquet codec here.
    codec = table.table_properties.get("write.parquet.compression-codec", "zstd")
    if table.partition_column is None:
        conformed.write.mode("errorifexists").option("compression", codec).parquet(target)
        return StagedFiles(staging_uri, tuple(from_spark_uri(f) for f in _list_parquet_files(spark, target)), ())
    if partition_keys is not None and len(partition_keys) == 1:
        # One partition: write its folder directly. partitionBy would make Spark sort every row by the folder column
        # (a partitioned write requires its input in that order) although all rows share one value; that sort held
        # each task's rows in execution memory and was most of the lake's overhead over a plain write. The rows'
        # partition value is checked from the footers before the commit (check_staged_files).
        key = partition_keys[0]
        conformed.write.mode("errorifexists").option("compression", codec).parquet(f"{target}/{_PART_DIR_COLUMN}={key}")
        files = _list_parquet_files(spark, target)
        return StagedFiles(staging_uri, tuple(from_spark_uri(f) for f in files), (key,))
    keyed = conformed.withColumn(_PART_DIR_COLUMN, F.date_format(F.col(table.partition_column), "yyyy-MM-dd"))
    if partition_keys is not None and len(partition_keys) > 1:
        # Many days in one write: gather each day into one task, so a day is a file rather than a file per task.
        keyed = keyed.repartition(max(len(partition_keys), spark.sparkContext.defaultParallelism), _PART_DIR_COLUMN)
    keyed.write.mode("errorifexists").option("compression", codec).partitionBy(_PART_DIR_COLUMN).parquet(target)
    files = _list_parquet_files(spark, target)
    values = sorted({f.split(f"{_PART_DIR_COLUMN}=")[1].split("/")[0] for f in files})
    expected = set(partition_keys or ())
    unexpected = [v for v in values if v not in expected]
    if unexpected:
        shown = ["<null>" if v == _NULL_PARTITION else v for v in unexpected]
        raise DataContractError(
            f"{table.identifier}: the DataFrame has rows with {table.partition_column} in {shown[:10]}, outside the "
            f"partitions being written {sorted(expected)[:10]}; nothing was committed"
        )
    return StagedFiles(staging_uri, tuple(from_spark_uri(f) for f in files), tuple(values))


def check_staged_files(
    io: FileIO, table: LakeTable, files: Sequence[str], partition_keys: Sequence[str] | None
) -> tuple[str, ...]:
    """Check staged files from their Parquet footers' statistics (no data read); return the files to commit.

    Refuses nulls in NOT NULL columns, and rows whose partition value is not one of the partitions being written:
    committing them would add rows to a partition without replacing it, and so duplicate them. Files without rows
    (Spark writes one for an empty DataFrame) are left out.
    """
    required = not_null_columns(table)
    partition_column = table.partition_column
    if not required and partition_column is None:
        return tuple(files)
    expected = {date.fromisoformat(k) for k in partition_keys or ()}
    nulls: dict[str, int] = {}
    outside: set[str] = set()
    keep: list[str] = []
    for path in files:
        with io.new_input(path).open() as stream:
            metadata = pq.ParquetFile(stream).metadata
        if metadata.num_rows == 0:
            continue
        keep.append(path)
        names = metadata.schema.names
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for column in required:
                stats = row_group.column(names.index(column)).statistics
                if stats is None or not stats.has_null_count:
                    raise DataContractError(f"{table.identifier}: {path} has no null statistics for {column!r}")
                nulls[column] = nulls.get(column, 0) + stats.null_count
            if partition_column is not None:
                stats = row_group.column(names.index(partition_column)).statistics
                if stats is None or not stats.has_null_count:
                    raise DataContractError(f"{table.identifier}: {path} has no statistics for {partition_column!r}")
                if stats.null_count:
                    outside.add("<null>")
                if stats.has_min_max:
                    # One value per file: add_files infers the file's partition from these statistics.
                    outside.update(v.isoformat() for v in {stats.min, stats.max} if v not in expected)
                    if stats.min != stats.max:
                        outside.add(f"{stats.min.isoformat()}..{stats.max.isoformat()}")
    offending = {c: n for c, n in nulls.items() if n}
    if offending:
        raise DataContractError(
            f"{table.identifier}: NOT NULL columns have nulls {offending} (column: null rows); nothing was committed"
        )
    if outside:
        raise DataContractError(
            f"{table.identifier}: the DataFrame has rows with {partition_column} in {sorted(outside)[:10]}, outside "
            f"the partitions being written {sorted(partition_keys or ())[:10]}; nothing was committed"
        )
    return tuple(keep)


def read(
    spark: SparkSession,
    iceberg_table: Table,
    table: LakeTable,
    *,
    partitions: PartitionSelection,
    snapshot_id: int | None,
) -> DataFrame:
    """Read partitions (all if None) of a table, optionally as of a snapshot, into a Spark DataFrame.

    pyiceberg plans the scan (partition pruning, snapshot selection); Spark reads the planned files. Spark does not
    see the Iceberg filter, so the partition filter is applied again on the rows.
    """
    scan = iceberg_table.scan(row_filter=iceberg_filter(table, partitions), snapshot_id=snapshot_id)
    tasks = list(scan.plan_files())
    with_deletes = [t.file.file_path for t in tasks if t.delete_files]
    if with_deletes:
        raise UnsupportedScanError(
            f"{table.identifier}: {len(with_deletes)} data files have row-level delete files (first: "
            f"{with_deletes[0]}); the Spark read path reads plain data files only. Read it with read_arrow, or "
            "rewrite the partition."
        )
    schema = arrow_schema_of(iceberg_table) if snapshot_id is None else _schema_at(iceberg_table, snapshot_id)
    df = read_files(spark, schema, [t.file.file_path for t in tasks])
    predicate = spark_filter(table, partitions)
    return df.where(predicate) if predicate is not None else df


def read_files(spark: SparkSession, schema: pa.Schema, files: Sequence[str]) -> DataFrame:
    """Parquet data files (a table's, or staged ones about to be committed) as rows of the table's schema."""
    struct = spark_schema(schema)
    if not files:
        return spark.createDataFrame([], struct)
    # Staged files sit in "name=value" folders; selecting the declared columns drops any column Spark would
    # derive from such a folder name.
    return spark.read.schema(struct).parquet(*map(to_spark_uri, files)).select([F.col(f.name) for f in struct.fields])


def _schema_at(iceberg_table: Table, snapshot_id: int) -> pa.Schema:
    snapshot = iceberg_table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise ValueError(f"snapshot {snapshot_id} does not exist in {iceberg_table.name()}")
    schema_id = snapshot.schema_id if snapshot.schema_id is not None else iceberg_table.schema().schema_id
    arrow = iceberg_table.schemas()[schema_id].as_arrow()
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in arrow])
