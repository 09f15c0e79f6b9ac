"""Write-audit-publish: audited data reaches main only when its blocking audits pass."""

from datetime import date
from decimal import Decimal
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch_platform.audit import (
    Audit,
    AuditedWrite,
    AuditOutcome,
    audit_and_commit,
    audit_check_specs,
    rows_satisfy,
    unique,
    write_audit_publish,
)
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.partitions import daily_partitions
from batch_platform.spark import SparkResource

PAYMENTS = LakeTable(
    namespace="test",
    name="payments",
    partition_column="payment_date",
    schema=pa.schema(
        [
            pa.field("payment_date", pa.date32(), nullable=False),
            pa.field("payment_id", pa.string(), nullable=False),
            pa.field("amount", pa.decimal128(18, 2), nullable=False),
        ]
    ),
)
AUDITS = [
    unique("payment_id"),
    rows_satisfy("amount_positive", "payments are positive", lambda: F.col("amount") > 0),
]
PARTITIONS = daily_partitions("2024-01-01")


class PaymentsConfig(dg.Config):
    duplicate: bool = False


def _payments(day: str, n: int, duplicate: bool = False) -> list[tuple[date, str, str]]:
    rows = [(date.fromisoformat(day), f"P{i}", f"{10 + i}.50") for i in range(n)]
    return rows + rows[:2] if duplicate else rows


@dg.asset(key=PAYMENTS.asset_key, partitions_def=PARTITIONS, check_specs=audit_check_specs(PAYMENTS, AUDITS))
def payments(
    context: dg.AssetExecutionContext, config: PaymentsConfig, lake: IcebergLakeResource, spark: SparkResource
):  # type: ignore[no-untyped-def]
    rows = _payments(context.partition_key, 20, config.duplicate)
    df = spark.session.createDataFrame(rows, "payment_date date, payment_id string, amount string")
    yield from write_audit_publish(context, lake, spark, PAYMENTS, df, AUDITS)


@dg.asset(deps=[payments], partitions_def=PARTITIONS)
def downstream_of_payments() -> None:
    return None


def _run(lake: IcebergLakeResource, spark_resource: SparkResource, duplicate: bool) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [payments, downstream_of_payments],
        partition_key="2024-01-05",
        resources={"lake": lake, "spark": spark_resource},
        run_config={"ops": {"test__payments": {"config": {"duplicate": duplicate}}}},
        raise_on_error=False,
    )


def test_audited_partition_is_published_to_main_and_its_branch_dropped(
    lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession
) -> None:
    result = _run(lake, spark_resource, duplicate=False)
    assert result.success
    assert lake.read_arrow(PAYMENTS, ["2024-01-05"]).num_rows == 20
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"unique_payment_id": True, "amount_positive": True}
    table = lake.load(PAYMENTS)
    assert [name for name in table.metadata.refs if name != "main"] == []
    mat = result.asset_materializations_for_node("test__payments")[0]
    assert mat.metadata["iceberg/snapshot_id"].value == table.current_snapshot().snapshot_id  # type: ignore[union-attr]


def test_a_published_step_reports_where_its_time_went_per_phase_and_per_audit(
    lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession
) -> None:
    result = _run(lake, spark_resource, duplicate=False)
    mat = result.asset_materializations_for_node("test__payments")[0]
    phases = {k: mat.metadata[k].value for k in ("wap/stage_seconds", "wap/audit_seconds", "wap/commit_seconds")}
    assert all(isinstance(v, float) and v > 0 for v in phases.values()), phases
    evaluations = {e.check_name: e.metadata for e in result.get_asset_check_evaluations()}
    per_audit = {name: metadata["audit_seconds"].value for name, metadata in evaluations.items()}
    assert set(per_audit) == {"unique_payment_id", "amount_positive"}
    assert isinstance(per_audit["unique_payment_id"], float) and per_audit["unique_payment_id"] > 0, per_audit
    # The row rule was counted by the staging job: its own phase reads nothing and says so.
    assert evaluations["amount_positive"]["counted"].value == "while staging"
    # The phase's total is its audits' sum (each rounded to the millisecond).
    assert abs(sum(per_audit.values()) - phases["wap/audit_seconds"]) < 0.01  # type: ignore[arg-type]


PROBED = LakeTable(namespace="test", name="probed_payments", partition_column="payment_date", schema=PAYMENTS.schema)
cached_while_auditing: list[int] = []


def _persisted_rdds(session: SparkSession) -> int:
    return int(session.sparkContext._jsc.getPersistentRDDs().size())  # type: ignore[union-attr]


def _record_cache(df: Any) -> AuditOutcome:
    cached_while_auditing.append(_persisted_rdds(df.sparkSession))
    return AuditOutcome(failing_rows=0)


CACHE_PROBE = Audit("cache_probe", "records how many RDDs Spark holds persisted while the audits run", _record_cache)
PROBED_AUDITS = [unique("payment_id"), CACHE_PROBE]  # the probe after an audit that has read the staged rows


@dg.asset(key=PROBED.asset_key, partitions_def=PARTITIONS, check_specs=audit_check_specs(PROBED, PROBED_AUDITS))
def probed_payments(context: dg.AssetExecutionContext, lake: IcebergLakeResource, spark: SparkResource):  # type: ignore[no-untyped-def]
    df = spark.session.createDataFrame(
        _payments(context.partition_key, 20), "payment_date date, payment_id string, amount string"
    )
    yield from write_audit_publish(context, lake, spark, PROBED, df, PROBED_AUDITS)


def test_audits_read_the_staged_files_without_pinning_the_steps_rows_in_spark_memory(
    lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession
) -> None:
    # A cached copy of every staged column (the loan book's installments too) kept Spark's storage memory from the
    # audits' own aggregations: a 23-day book chunk at scale 1 failed its uniqueness audit (docs/benchmarks.md).
    persisted_before = _persisted_rdds(spark)
    cached_while_auditing.clear()
    result = dg.materialize(
        [probed_payments], partition_key="2024-01-05", resources={"lake": lake, "spark": spark_resource}
    )
    assert result.success
    assert cached_while_auditing == [persisted_before]
    assert lake.read_arrow(PROBED, ["2024-01-05"]).num_rows == 20


RULED = LakeTable(namespace="test", name="ruled_payments", partition_column="payment_date", schema=PAYMENTS.schema)


def _ruled_audit(evaluated: list[int]) -> Audit:
    """A row rule (amounts are positive) whose read of the staged files is recorded."""
    rule = rows_satisfy("amount_positive", "payments are positive", lambda: F.col("amount") > 0)

    def evaluate(df: Any) -> AuditOutcome:
        evaluated.append(1)
        return rule.evaluate(df)

    return Audit(rule.name, rule.description, evaluate, failing_row=rule.failing_row)


def _ruled_write(
    lake: IcebergLakeResource,
    spark: SparkSession,
    amounts: list[str],
    audit: Audit,
    keys: tuple[str, ...] = ("2024-01-05",),
) -> AuditedWrite:
    rows = [(date(2024, 1, 5), f"P{i}", amount) for i, amount in enumerate(amounts)]
    df = spark.createDataFrame(rows, "payment_date date, payment_id string, amount string")
    lineage = Lineage("run-ruled", "test/ruled_payments", keys)
    return audit_and_commit(lake, spark, RULED, df, [audit], partition_keys=list(keys), lineage=lineage)


def test_a_row_rule_is_counted_by_the_staging_job_and_reads_the_staged_files_only_when_rows_fail(
    lake: IcebergLakeResource, spark: SparkSession
) -> None:
    evaluated: list[int] = []
    audit = _ruled_audit(evaluated)

    passing = _ruled_write(lake, spark, ["1.00", "2.50", "3.00"], audit)
    assert passing.published is not None and evaluated == []
    assert lake.read_arrow(RULED, ["2024-01-05"]).num_rows == 3

    failing = _ruled_write(lake, spark, ["1.00", "-2.50", "0.00", "4.00"], audit)
    # A failing count sends the rule to the staged files for the exact rows and a sample; main keeps the first write.
    assert evaluated == [1] and failing.published is None
    (_, outcome, _) = failing.outcomes[0]
    assert outcome.failing_rows == 2
    assert sorted(r["payment_id"] for r in outcome.sample) == ["P1", "P2"]
    assert lake.read_arrow(RULED, ["2024-01-05"]).num_rows == 3


def test_an_empty_write_of_many_days_is_audited_from_its_files_when_spark_drops_the_staging_count(
    lake: IcebergLakeResource, spark: SparkSession
) -> None:
    # Spark 4.1 optimizes the count away when an empty DataFrame is written by partition (a quiet month of
    # charge-offs in a backfill): the rule then reads the staged files, and the empty write still publishes.
    evaluated: list[int] = []
    write = _ruled_write(lake, spark, [], _ruled_audit(evaluated), keys=("2024-01-05", "2024-01-08"))
    assert evaluated == [1]
    assert write.published is not None and write.outcomes[0][1].passed
    assert lake.read_arrow(RULED, ["2024-01-05", "2024-01-08"]).num_rows == 0


def test_a_passing_step_costs_one_catalog_commit_and_a_rerun_replaces_its_partition(
    lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run(lake, spark_resource, duplicate=False).success
    commits: list[str] = []
    commit_table = SqlCatalog.commit_table

    def counted(catalog: SqlCatalog, table: Any, *args: Any, **kwargs: Any) -> Any:
        commits.append(".".join(table.name()))
        return commit_table(catalog, table, *args, **kwargs)

    monkeypatch.setattr(SqlCatalog, "commit_table", counted)
    assert _run(lake, spark_resource, duplicate=False).success

    # Staging and auditing touch no table metadata: one catalog commit replaces the partition.
    assert commits == [PAYMENTS.identifier]
    assert [name for name in lake.load(PAYMENTS).metadata.refs if name != "main"] == []
    assert lake.read_arrow(PAYMENTS, ["2024-01-05"]).num_rows == 20


def test_failed_blocking_audit_leaves_main_untouched_keeps_the_branch_and_stops_downstream(
    lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession
) -> None:
    assert _run(lake, spark_resource, duplicate=False).success
    main_before = lake.load(PAYMENTS).current_snapshot()

    result = _run(lake, spark_resource, duplicate=True)

    assert not result.success
    assert lake.load(PAYMENTS).current_snapshot() == main_before
    assert lake.read_arrow(PAYMENTS, ["2024-01-05"]).num_rows == 20
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "unique_payment_id")
    assert not evaluation.passed
    assert evaluation.metadata["failing_rows"].value == 2
    sample = evaluation.metadata["failing_sample"].value
    assert sorted(r["payment_id"] for r in sample) == ["P0", "P1"]  # type: ignore[union-attr]
    branch = str(evaluation.metadata["audit_branch"].value)
    assert lake.read_arrow(PAYMENTS, ["2024-01-05"], ref=branch).num_rows == 22
    statuses = {s.step_key: s.status for s in result.get_step_stats()} if hasattr(result, "get_step_stats") else {}
    downstream_ran = any(e.step_key == "downstream_of_payments" and e.is_step_success for e in result.all_events)
    assert not downstream_ran, statuses


def test_publish_keeps_commits_that_reached_main_after_the_branch_was_made(lake: IcebergLakeResource) -> None:
    def rows(day: str, n: int) -> pa.Table:
        return pa.Table.from_pylist(
            [{"payment_date": d, "payment_id": p, "amount": Decimal(a)} for d, p, a in _payments(day, n)],
            schema=PAYMENTS.schema,
        )

    lineage = Lineage("run-a", "test/payments", ("2024-01-01",))
    lake.write_arrow(PAYMENTS, rows("2024-01-01", 3), partition_keys=["2024-01-01"], lineage=lineage)
    branch = lake.create_audit_branch(PAYMENTS, lineage)
    lake.write_arrow(PAYMENTS, rows("2024-01-01", 7), partition_keys=["2024-01-01"], lineage=lineage, branch=branch)
    # Another run publishes a different day to main while this audit is in flight.
    other = Lineage("run-b", "test/payments", ("2024-01-02",))
    lake.write_arrow(PAYMENTS, rows("2024-01-02", 4), partition_keys=["2024-01-02"], lineage=other)

    lake.publish(PAYMENTS, branch, partition_keys=["2024-01-01"], lineage=lineage)

    assert lake.read_arrow(PAYMENTS, ["2024-01-01"]).num_rows == 7
    assert lake.read_arrow(PAYMENTS, ["2024-01-02"]).num_rows == 4
    with pytest.raises(ValueError, match="has no branch"):
        lake.read_arrow(PAYMENTS, ref=branch)
