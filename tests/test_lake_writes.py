"""Writes through the lake: idempotent partition replacement, lineage, contracts, evolution, time travel."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from assets.platform_demo import CARD_TRANSACTIONS, DAILY_TRANSACTION_TOTALS, demo_assets
from batch_platform.lake import (
    DataContractError,
    IcebergLakeResource,
    LakeTable,
    Lineage,
    SchemaEvolutionError,
)
from batch_platform.lake.commit import SUMMARY_PARTITIONS, SUMMARY_RUN_ID
from batch_platform.spark import SparkResource

LOANS = LakeTable(
    namespace="test",
    name="loans",
    partition_column="as_of_date",
    schema=pa.schema(
        [
            pa.field("as_of_date", pa.date32(), nullable=False),
            pa.field("loan_id", pa.string(), nullable=False),
            pa.field("principal", pa.decimal128(18, 2)),
        ]
    ),
)


def _loans(day: str, n: int, principal: str = "100.00") -> pa.Table:
    return pa.table(
        {
            "as_of_date": pa.array([date.fromisoformat(day)] * n, pa.date32()),
            "loan_id": [f"L{i}" for i in range(n)],
            "principal": pa.array([principal] * n).cast(pa.decimal128(18, 2)),
        }
    )


def _materialize_demo(
    lake: IcebergLakeResource, spark_resource: SparkResource, instance: dg.DagsterInstance, rows: int, **kwargs: object
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        demo_assets,
        instance=instance,
        resources={"lake": lake, "spark": spark_resource},
        run_config={"ops": {"demo__card_transactions": {"config": {"rows_per_day": rows}}}},
        **kwargs,  # type: ignore[arg-type]
    )


def test_materializing_a_partition_three_times_keeps_one_copy_and_three_run_ids(
    lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    run_ids = []
    for _ in range(3):
        result = _materialize_demo(lake, spark_resource, instance, 700, partition_key="2024-01-02")
        assert result.success
        run_ids.append(result.run_id)

    assert lake.read_arrow(CARD_TRANSACTIONS).num_rows == 700
    totals = lake.read_arrow(DAILY_TRANSACTION_TOTALS)
    assert sum(totals["transactions"].to_pylist()) == 700

    table = lake.load(CARD_TRANSACTIONS)
    summary_run_ids = {s.summary.get(SUMMARY_RUN_ID) for s in table.snapshots() if s.summary}
    assert set(run_ids) <= summary_run_ids
    # The materialization names the snapshot of its own commit: the last run's is the table's current snapshot.
    mat = result.asset_materializations_for_node("demo__card_transactions")[0]
    assert mat.metadata["iceberg/snapshot_id"].value == table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    assert mat.metadata["dagster/row_count"].value == 700


def test_a_partition_range_run_commits_all_its_days_in_one_snapshot(
    lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize_demo(
        lake,
        spark_resource,
        instance,
        300,
        tags={"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"},
    )
    assert result.success
    df = lake.read_spark(spark, CARD_TRANSACTIONS)
    counts = {r["transaction_date"].isoformat(): r["count"] for r in df.groupBy("transaction_date").count().collect()}
    assert counts == {"2024-01-01": 300, "2024-01-02": 300, "2024-01-03": 300}
    appends = [s for s in lake.load(CARD_TRANSACTIONS).snapshots() if s.summary and s.summary.get("added-records")]
    assert len(appends) == 1
    assert appends[0].summary[SUMMARY_PARTITIONS] == "2024-01-01,2024-01-02,2024-01-03"  # type: ignore[index]


def test_spark_rows_outside_the_written_partitions_are_refused_and_the_table_is_unchanged(
    lake: IcebergLakeResource, spark: SparkSession
) -> None:
    lake.write_arrow(LOANS, _loans("2024-03-01", 5), partition_keys=["2024-03-01"], lineage=Lineage("r1", "test/loans"))
    before = lake.load(LOANS).current_snapshot()
    df = spark.createDataFrame(_loans("2024-03-02", 3).to_pylist())
    with pytest.raises(DataContractError, match=r"as_of_date in \['2024-03-02'\].*nothing was committed"):
        lake.write_spark(spark, LOANS, df, partition_keys=["2024-03-01"], lineage=Lineage("r2", "test/loans"))
    assert lake.load(LOANS).current_snapshot() == before
    assert lake.read_arrow(LOANS).num_rows == 5


def test_a_dataframe_missing_a_declared_column_fails_naming_it(lake: IcebergLakeResource, spark: SparkSession) -> None:
    df = spark.createDataFrame(_loans("2024-03-01", 2).to_pylist()).drop("principal")
    with pytest.raises(DataContractError, match=r"missing columns \['principal'\]"):
        lake.write_spark(spark, LOANS, df, partition_keys=["2024-03-01"], lineage=Lineage("r", "test/loans"))


def test_arrow_write_replaces_only_the_named_partitions(lake: IcebergLakeResource) -> None:
    lineage = Lineage("r", "test/loans")
    lake.write_arrow(LOANS, _loans("2024-03-01", 4), partition_keys=["2024-03-01"], lineage=lineage)
    lake.write_arrow(LOANS, _loans("2024-03-02", 6), partition_keys=["2024-03-02"], lineage=lineage)
    lake.write_arrow(LOANS, _loans("2024-03-02", 2, "5.00"), partition_keys=["2024-03-02"], lineage=lineage)
    assert lake.read_arrow(LOANS, ["2024-03-01"]).num_rows == 4
    second = lake.read_arrow(LOANS, ["2024-03-02"])
    assert second.num_rows == 2 and {str(v) for v in second["principal"].to_pylist()} == {"5.00"}
    with pytest.raises(DataContractError, match="outside the partitions being written"):
        lake.write_arrow(LOANS, _loans("2024-03-05", 1), partition_keys=["2024-03-01"], lineage=lineage)


def test_a_new_nullable_column_evolves_the_schema_and_old_rows_read_as_null(
    lake: IcebergLakeResource, spark: SparkSession
) -> None:
    lake.write_arrow(LOANS, _loans("2024-03-01", 3), partition_keys=["2024-03-01"], lineage=Lineage("r", "t"))
    evolved = LakeTable(
        namespace=LOANS.namespace,
        name=LOANS.name,
        partition_column=LOANS.partition_column,
        schema=LOANS.schema.append(pa.field("risk_band", pa.string())),
    )
    rows = _loans("2024-03-02", 2).append_column("risk_band", pa.array(["A", "B"]))
    lake.write_arrow(evolved, rows, partition_keys=["2024-03-02"], lineage=Lineage("r", "t"))
    assert "risk_band" in lake.load(LOANS).schema().column_names
    by_day = {r["as_of_date"].isoformat(): r["band"] for r in _bands(lake, evolved, spark)}
    assert by_day == {"2024-03-01": None, "2024-03-02": "A"}


def _bands(lake: IcebergLakeResource, table: LakeTable, spark: SparkSession) -> list:  # type: ignore[type-arg]
    df = lake.read_spark(spark, table)
    return df.groupBy("as_of_date").agg(F.min("risk_band").alias("band")).collect()


def test_an_incompatible_type_change_fails_naming_the_column_and_both_types(lake: IcebergLakeResource) -> None:
    lake.write_arrow(LOANS, _loans("2024-03-01", 1), partition_keys=["2024-03-01"], lineage=Lineage("r", "t"))
    changed = LakeTable(
        namespace=LOANS.namespace,
        name=LOANS.name,
        partition_column=LOANS.partition_column,
        schema=LOANS.schema.set(2, pa.field("principal", pa.string())),
    )
    with pytest.raises(
        SchemaEvolutionError, match=r"'principal': table has type decimal\(18, 2\), declaration has string"
    ):
        lake.table(changed)
    assert str(lake.load(LOANS).schema().find_field("principal").field_type) == "decimal(18, 2)"


def test_a_safe_type_promotion_is_applied(lake: IcebergLakeResource, tmp_path: Path) -> None:
    narrow = LakeTable("test", "counts", pa.schema([pa.field("n", pa.int32())]))
    lake.write_arrow(narrow, pa.table({"n": pa.array([1], pa.int32())}), partition_keys=None, lineage=Lineage("r", "t"))
    wide = LakeTable("test", "counts", pa.schema([pa.field("n", pa.int64())]))
    lake.write_arrow(
        wide, pa.table({"n": pa.array([2**40], pa.int64())}), partition_keys=None, lineage=Lineage("r", "t")
    )
    assert lake.read_arrow(wide)["n"].to_pylist() == [2**40]


def test_a_read_pinned_to_an_older_snapshot_returns_the_old_rows(
    lake: IcebergLakeResource, spark: SparkSession
) -> None:
    first = lake.write_arrow(
        LOANS, _loans("2024-03-01", 3, "1.00"), partition_keys=["2024-03-01"], lineage=Lineage("r1", "t")
    )
    lake.write_arrow(LOANS, _loans("2024-03-01", 5, "2.00"), partition_keys=["2024-03-01"], lineage=Lineage("r2", "t"))
    old_arrow = lake.read_arrow(LOANS, ["2024-03-01"], snapshot_id=first.snapshot_id)
    assert old_arrow.num_rows == 3 and {str(v) for v in old_arrow["principal"].to_pylist()} == {"1.00"}
    old_spark = lake.read_spark(spark, LOANS, ["2024-03-01"], snapshot_id=first.snapshot_id)
    assert sorted(str(r["principal"]) for r in old_spark.collect()) == ["1.00"] * 3
    assert lake.read_spark(spark, LOANS, ["2024-03-01"]).count() == 5


def test_a_partition_range_read_returns_only_days_in_the_range(lake: IcebergLakeResource, spark: SparkSession) -> None:
    for i, day in enumerate(["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]):
        lake.write_arrow(LOANS, _loans(day, i + 1), partition_keys=[day], lineage=Lineage("r", "t"))
    selected = dg.PartitionKeyRange("2024-03-02", "2024-03-03")
    assert lake.read_spark(spark, LOANS, selected).count() == 2 + 3
    assert lake.read_arrow(LOANS, selected).num_rows == 2 + 3
    assert lake.read_spark(spark, LOANS, ["2024-02-01"]).count() == 0


def test_an_unpartitioned_table_is_replaced_whole(lake: IcebergLakeResource) -> None:
    merchants = LakeTable("test", "merchants", pa.schema([pa.field("merchant_id", pa.string())]))
    lake.write_arrow(merchants, pa.table({"merchant_id": ["a", "b"]}), partition_keys=None, lineage=Lineage("r", "t"))
    lake.write_arrow(merchants, pa.table({"merchant_id": ["c"]}), partition_keys=None, lineage=Lineage("r", "t"))
    assert lake.read_arrow(merchants)["merchant_id"].to_pylist() == ["c"]


def test_nulls_in_a_not_null_column_are_refused_from_file_statistics(
    lake: IcebergLakeResource, spark: SparkSession
) -> None:
    rows = [{"as_of_date": date(2024, 3, 1), "loan_id": None, "principal": None}] * 2
    df = spark.createDataFrame(rows, "as_of_date date, loan_id string, principal decimal(18,2)")
    with pytest.raises(DataContractError, match=r"NOT NULL columns have nulls \{'loan_id': 2\}"):
        lake.write_spark(spark, LOANS, df, partition_keys=["2024-03-01"], lineage=Lineage("r", "test/loans"))
    assert lake.read_arrow(LOANS).num_rows == 0
    with pytest.raises(DataContractError, match="'loan_id' is required but has nulls"):
        lake.write_arrow(
            LOANS,
            pa.Table.from_pylist(rows, schema=LOANS.schema.set(1, pa.field("loan_id", pa.string()))),
            partition_keys=["2024-03-01"],
            lineage=Lineage("r", "test/loans"),
        )


def test_an_empty_dataframe_empties_the_partition_without_committing_empty_files(
    lake: IcebergLakeResource, spark: SparkSession
) -> None:
    lake.write_arrow(LOANS, _loans("2024-03-01", 4), partition_keys=["2024-03-01"], lineage=Lineage("r1", "t"))
    empty = spark.createDataFrame([], "as_of_date date, loan_id string, principal decimal(18,2)")
    result = lake.write_spark(spark, LOANS, empty, partition_keys=["2024-03-01"], lineage=Lineage("r2", "t"))
    assert result.rows == 0 and result.files == 0
    assert lake.read_arrow(LOANS, ["2024-03-01"]).num_rows == 0
    assert all(task.file.record_count > 0 for task in lake.load(LOANS).scan().plan_files())
