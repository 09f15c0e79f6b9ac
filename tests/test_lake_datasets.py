"""Declared inputs (batch_platform.inputs, batch_platform.datasets): one declaration gives Dagster's dependencies, the
partitions a step reads and the audits, and a declaration that contradicts itself fails when the definitions load."""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from batch_platform.audit import rows_satisfy
from batch_platform.datasets import DatasetDeclarationError, LakeDataset, Step, lake_dataset_asset
from batch_platform.inputs import (
    HISTORY_PARTITIONS,
    InputWindowError,
    LakeInput,
    before_this_partition,
    last,
    pinned,
    previous,
    this_partition,
    up_to_this_partition,
    whole_table,
)
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.commit import SUMMARY_PARTITIONS
from batch_platform.spark import SparkResource

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01", fmt="%Y-%m-%d")


def table(name: str) -> LakeTable:
    return LakeTable(
        "t",
        name,
        pa.schema([pa.field("day", pa.date32(), nullable=False), pa.field("amount", pa.int64())]),
        partition_column="day",
    )


EVENTS, BALANCES, RATES = table("events"), table("balances"), table("rates")


def identity(events: DataFrame) -> DataFrame:
    return events


def running_balance(step: Step, events: DataFrame, before: DataFrame) -> DataFrame:
    """Each day's balance: the day before's plus the day's events (a day-chained dataset, days in order)."""
    balance = before.agg(F.coalesce(F.sum("amount"), F.lit(0))).first()[0]
    rows = []
    for key in sorted(step.partition_keys):
        day = date.fromisoformat(key)
        balance += events.where(F.col("day") == F.lit(day)).agg(F.coalesce(F.sum("amount"), F.lit(0))).first()[0]
        rows.append((day, balance))
    return step.session.createDataFrame(rows, "day date, amount long")


def balances(required: bool = True, **declaration: Any) -> LakeDataset:
    return LakeDataset(
        BALANCES,
        running_balance,
        inputs=[LakeInput(EVENTS, name="events"), LakeInput(BALANCES, previous(1), name="before", required=required)],
        partitions_def=DAYS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        **declaration,
    )


def mapping_of(dataset: LakeDataset, upstream: LakeTable) -> dg.PartitionMapping | None:
    graph = AssetGraph.from_assets(
        [
            lake_dataset_asset(dataset),
            dg.AssetsDefinition(specs=[dg.AssetSpec(upstream.asset_key, partitions_def=DAYS)]),
        ]
    )
    return graph.get_partition_mapping(dataset.asset_key, upstream.asset_key)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (this_partition(), dg.TimeWindowPartitionMapping()),
        (previous(2), dg.TimeWindowPartitionMapping(start_offset=-2, end_offset=-1)),
        (last(2), dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=0)),
        (up_to_this_partition(), dg.TimeWindowPartitionMapping(start_offset=-HISTORY_PARTITIONS, end_offset=0)),
        (before_this_partition(), dg.TimeWindowPartitionMapping(start_offset=-HISTORY_PARTITIONS, end_offset=-1)),
        (whole_table(), dg.AllPartitionMapping()),
        (pinned(ref="v1"), dg.AllPartitionMapping()),
    ],
    ids=lambda value: value.describe() if hasattr(value, "describe") else "",
)
def test_each_window_is_the_dependency_dagster_follows(window: object, expected: dg.PartitionMapping) -> None:
    dataset = LakeDataset(
        RATES, lambda events: events, inputs=[LakeInput(EVENTS, window, name="events")], partitions_def=DAYS
    )  # type: ignore[arg-type]
    assert mapping_of(dataset, EVENTS) == expected


def test_a_step_reads_the_partitions_its_windows_map_to_and_a_history_as_one_range() -> None:
    step = ["2024-01-10", "2024-01-11"]
    assert LakeInput(EVENTS).selection(RATES, DAYS, step) == step
    assert LakeInput(EVENTS, previous(2)).selection(RATES, DAYS, step) == ["2024-01-08", "2024-01-09", "2024-01-10"]
    assert LakeInput(EVENTS, up_to_this_partition()).selection(RATES, DAYS, step) == dg.PartitionKeyRange(
        "2024-01-01", "2024-01-11"
    )
    # A dataset reading its own past never reads the partitions it is writing: it computes them, in order.
    assert LakeInput(BALANCES, previous(1)).selection(BALANCES, DAYS, step) == ["2024-01-09"]
    assert LakeInput(BALANCES, previous(1)).selection(BALANCES, DAYS, ["2024-01-01"]) == []


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda: LakeDataset(
                RATES, lambda events, other: events, inputs=[LakeInput(EVENTS, name="events")], partitions_def=DAYS
            ),
            "the transform takes ['other'], which are no declared input",
        ),
        (
            lambda: LakeDataset(
                RATES, identity, inputs=[LakeInput(EVENTS, name="events"), LakeInput(BALANCES)], partitions_def=DAYS
            ),
            "inputs ['balances'] are declared but neither transform nor audit reads them",
        ),
        (
            lambda: LakeDataset(
                RATES,
                lambda events, before: events,
                inputs=[LakeInput(EVENTS, name="events"), LakeInput(EVENTS, previous(1), name="before")],
                partitions_def=DAYS,
            ),
            "['t.events'] are declared as two inputs",
        ),
        (
            lambda: LakeDataset(
                RATES, identity, inputs=[LakeInput(EVENTS, name="events")], partitions_def=DAYS, compute="huge"
            ),
            "huge",
        ),
        (
            lambda: LakeDataset(BALANCES, lambda balances: balances, inputs=[LakeInput(BALANCES)], partitions_def=DAYS),
            "a dataset can only read its own earlier partitions",
        ),
        (
            lambda: LakeDataset(RATES, identity, inputs=[LakeInput(EVENTS, up_to_this_partition(), name="events")]),
            "a partitioned table needs partitions",
        ),
    ],
    ids=["unknown argument", "unread input", "one table twice", "unknown profile", "self not earlier", "no partitions"],
)
def test_a_declaration_that_contradicts_itself_fails_at_load_naming_what(declare: object, message: str) -> None:
    assert callable(declare)
    with pytest.raises((DatasetDeclarationError, InputWindowError, KeyError, ValueError), match=None) as failure:
        declare()
    assert message in str(failure.value)


def write_events(lake: IcebergLakeResource, days: list[str]) -> None:
    rows = pa.table(
        {"day": [date.fromisoformat(d) for d in days], "amount": [10] * len(days)},
        schema=EVENTS.schema,
    )
    lake.write_arrow(EVENTS, rows, partition_keys=days, lineage=Lineage("test", EVENTS.asset_key.to_user_string()))


def materialize(
    lake: IcebergLakeResource,
    spark: SparkResource,
    first: str,
    last_day: str,
    instance: dg.DagsterInstance,
    dataset: LakeDataset | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [lake_dataset_asset(dataset or balances())],
        resources={"lake": lake, "spark": spark},
        instance=instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last_day},
        raise_on_error=False,
    )


def test_a_day_chained_dataset_starts_its_chain_empty_and_refuses_to_skip_a_day_it_carries_from(
    lake: IcebergLakeResource, spark_resource: SparkResource
) -> None:
    write_events(lake, ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"])
    instance = dg.DagsterInstance.ephemeral()
    # The chain's first day (nothing before it in the table) starts from nothing.
    assert materialize(lake, spark_resource, "2024-01-02", "2024-01-03", instance).success
    assert sorted(lake.read_arrow(BALANCES)["amount"].to_pylist()) == [10, 20]

    # 2024-01-04 was never built, and the table holds days before it: 2024-01-05 must not start from nothing.
    skipped = materialize(lake, spark_resource, "2024-01-05", "2024-01-05", instance)
    assert not skipped.success
    failure = skipped.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "2024-01-04 is not materialized" in failure.message
    assert sorted(lake.read_arrow(BALANCES)["amount"].to_pylist()) == [10, 20]  # the failed step wrote nothing

    assert materialize(lake, spark_resource, "2024-01-04", "2024-01-05", instance).success
    assert sorted(lake.read_arrow(BALANCES)["amount"].to_pylist()) == [10, 20, 30, 40]


def written_partitions(lake: IcebergLakeResource, table: LakeTable) -> list[str]:
    """The partitions of each commit to main that added rows, oldest first, from the snapshots' lineage."""
    snapshots = lake.table(table).snapshots()
    return [s.summary[SUMMARY_PARTITIONS] for s in snapshots if s.summary and s.summary.get("added-records")]


def test_a_day_chain_run_longer_than_one_write_commits_in_order_each_write_carrying_from_the_one_before(
    lake: IcebergLakeResource, spark_resource: SparkResource
) -> None:
    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    write_events(lake, days)
    result = materialize(
        lake, spark_resource, days[0], days[-1], dg.DagsterInstance.ephemeral(), balances(max_partitions_per_write=2)
    )

    assert result.success
    # Each write started from the balance the write before it committed: a write that read the table as the run
    # found it would restart from nothing at 2024-01-03.
    assert sorted(lake.read_arrow(BALANCES)["amount"].to_pylist()) == [10, 20, 30, 40, 50]
    assert written_partitions(lake, BALANCES) == [
        "2024-01-01,2024-01-02",
        "2024-01-03,2024-01-04",
        "2024-01-05",
    ]
    # One materialization per partition of the run, all with the step's metadata: the three writes as one.
    materializations = result.asset_materializations_for_node(BALANCES.asset_key.to_python_identifier())
    assert sorted(m.partition for m in materializations) == days
    metadata = {k: v.value for k, v in materializations[0].metadata.items()}
    assert metadata["dagster/row_count"] == 5 and metadata["wap/writes"] == 3


def test_a_write_failing_its_audit_stops_the_run_and_keeps_what_the_writes_before_it_committed(
    lake: IcebergLakeResource, spark_resource: SparkResource
) -> None:
    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    write_events(lake, days)
    below = rows_satisfy("below_35", "balances stay below 35", lambda: F.col("amount") < 35)
    dataset = balances(max_partitions_per_write=2, audits=[below])
    result = materialize(lake, spark_resource, days[0], days[-1], dg.DagsterInstance.ephemeral(), dataset)

    assert not result.success
    # The first write passed and is on main; the second (30, 40) failed on 40 and is not; the third never ran.
    assert sorted(lake.read_arrow(BALANCES)["amount"].to_pylist()) == [10, 20]
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None
    assert "audit failed for 2024-01-03..2024-01-04: below_35 (1 rows)" in failure.message
    assert "earlier writes were committed (2024-01-01..2024-01-02)" in failure.message
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["failing_rows"].value == 1
