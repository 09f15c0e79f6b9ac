"""Dataset specs: YAML files of Spark SQL datasets, loaded by one Dagster Component into lake datasets.

Unit tests load specs against a small catalog (one input table, daily partitions) and check the assets and every
mistake's message (file, field, what is wrong); the Spark tests materialize specs on a real lake, and check that the
lending merchant_performance spec computes what its Python predecessor computed.
"""

from __future__ import annotations

import random
import textwrap
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from assets.lending.dataset_specs import LENDING_SPEC_DATASETS, lending_spec_assets
from assets.lending.tables import CORE_CLOSED_LOANS, CORE_LOAN_DAILY_STATUS, REPORTING_MERCHANT_PERFORMANCE
from batch_platform.compute import COMPUTE_PROFILE_TAG
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.spark import SparkResource
from batch_platform.specs import LakeDatasetSpecs, SpecCatalog, SpecError, load_specs, spec_assets

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")
LOANS = LakeTable(
    "core",
    "loans",
    pa.schema(
        [
            pa.field("business_date", pa.date32(), nullable=False),
            pa.field("loan_id", pa.int64(), nullable=False),
            pa.field("merchant_id", pa.int64(), nullable=False),
            pa.field("principal", pa.decimal128(18, 2), nullable=False),
        ]
    ),
    partition_column="business_date",
)
CATALOG = SpecCatalog.of([LOANS], {"daily": DAILY})
# The asset graph needs the resource keys bound, not the resources.
NO_RESOURCES = {"lake": dg.ResourceDefinition.none_resource(), "spark": dg.ResourceDefinition.none_resource()}

MERCHANT_TOTALS = """
table: reports.merchant_totals
description: Principal lent per merchant and day.
owners: [team:merchant-analytics, ana@example.com]
partitions: daily
partition_column: business_date
columns:
  business_date: date not null
  merchant_id: long not null
  loans: long not null
  principal: decimal(18,2) not null
inputs:
  loans: {table: core.loans, window: this_partition}
sql: |
  SELECT business_date, merchant_id, count(1) AS loans, CAST(sum(principal) AS decimal(18,2)) AS principal
  FROM loans
  GROUP BY business_date, merchant_id
compute: medium
freshness: {fail_after_hours: 30, warn_after_hours: 26}
audits:
  unique: [business_date, merchant_id]
  rows_satisfy:
    - {name: principal_is_positive, description: every merchant lent something, condition: "principal > 0"}
"""

# Reads the spec above (a spec's table is an input like any other) and its own previous partition.
MERCHANT_TRENDS = """
table: reports.merchant_trends
description: Principal lent per merchant, against the previous day.
partitions: daily
partition_column: business_date
columns:
  business_date: date not null
  merchant_id: long not null
  principal: decimal(18,2) not null
  previous_principal: decimal(18,2)
inputs:
  totals: {table: reports.merchant_totals}
  yesterday: {table: reports.merchant_trends, window: "previous:1"}
sql: |
  WITH t AS (SELECT business_date, merchant_id, principal FROM totals)
  SELECT t.business_date, t.merchant_id, t.principal, y.principal AS previous_principal
  FROM t LEFT JOIN yesterday y ON t.merchant_id = y.merchant_id
compute: medium
audits:
  not_null: [merchant_id]
  blocking: false
"""


def _write_specs(folder: Path, **specs: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in specs.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder


def _load_error(tmp_path: Path, text: str) -> str:
    folder = _write_specs(tmp_path / "specs", x=text)
    with pytest.raises(SpecError) as raised:
        load_specs(folder, CATALOG)
    return str(raised.value)


# -- a good spec ----------------------------------------------------------------------------------------------------


def test_a_spec_becomes_an_asset_with_its_deps_checks_owners_description_profile_and_freshness(tmp_path: Path) -> None:
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS, merchant_trends=MERCHANT_TRENDS)
    assets = spec_assets("test_specs", load_specs(folder, CATALOG))
    graph = dg.Definitions(assets=assets, resources=NO_RESOURCES).resolve_asset_graph()
    totals = graph.get(dg.AssetKey(["reports", "merchant_totals"]))
    trends = graph.get(dg.AssetKey(["reports", "merchant_trends"]))
    keys = [totals.key, trends.key]

    assert totals.description == "Principal lent per merchant and day."
    assert totals.owners == ["team:merchant-analytics", "ana@example.com"]
    assert totals.tags[COMPUTE_PROFILE_TAG] == "medium"
    assert totals.group_name == "reports"
    assert totals.partitions_def == DAILY
    assert totals.metadata["batch_platform/spec_file"] == "specs/merchant_totals.yaml"
    assert totals.freshness_policy == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=30), warn_window=timedelta(hours=26)
    )
    assert totals.parent_keys == {LOANS.asset_key}
    checks = {key: {c.name: c.blocking for a in assets for c in a.check_specs if c.asset_key == key} for key in keys}
    assert checks[totals.key] == {
        "unique_business_date_merchant_id": True,
        "principal_is_positive": True,
    }
    assert checks[trends.key] == {"not_null_merchant_id": False}
    (trends_def,) = [a for a in assets if trends.key in a.keys]
    assert {dep.asset_key: dep.partition_mapping for dep in trends_def.specs_by_key[trends.key].deps} == {
        totals.key: None,
        trends.key: dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
    }
    assert trends_def.op.tags[COMPUTE_PROFILE_TAG] == "medium"


def test_datasets_of_different_profiles_or_partitions_go_to_different_assets_and_singles_keep_their_pool(
    tmp_path: Path,
) -> None:
    small = MERCHANT_TOTALS.replace("compute: medium", "compute: small")
    folder = _write_specs(tmp_path / "specs", merchant_totals=small, merchant_trends=MERCHANT_TRENDS)
    assets = spec_assets("test_specs", load_specs(folder, CATALOG))
    assert len(assets) == 2
    single = next(a for a in assets if dg.AssetKey(["reports", "merchant_totals"]) in a.keys)
    assert single.op.pool == "iceberg-reports-merchant_totals"


def test_multi_assets_hold_one_level_of_the_graph_at_most_the_maximum_each(tmp_path: Path) -> None:
    # step0 <- step1..4 (fan-out) <- step5 (fan-in of step1 and step2)
    reads = {1: "reports.step0", 2: "reports.step0", 3: "reports.step0", 4: "reports.step0", 5: "reports.step1"}
    specs = {
        f"step{i}": MERCHANT_TOTALS.replace("reports.merchant_totals", f"reports.step{i}").replace(
            "core.loans", reads.get(i, "core.loans")
        )
        for i in range(6)
    }
    specs["step5"] = (
        specs["step5"]
        .replace(
            "  loans: {table: reports.step1, window: this_partition}\n",
            "  loans: {table: reports.step1, window: this_partition}\n  more: {table: reports.step2}\n",
        )
        .replace("  FROM loans\n", "  FROM (SELECT * FROM loans UNION ALL SELECT * FROM more) AS u\n")
    )
    datasets = load_specs(_write_specs(tmp_path / "specs", **specs), CATALOG)
    assets = spec_assets("fan", datasets, max_per_asset=3)
    # Level by level, so no multi-asset both feeds and reads another (Dagster would split it up again).
    assert [sorted(k.path[1] for k in a.keys) for a in assets] == [
        ["step0"],
        ["step1", "step2", "step3"],
        ["step4"],
        ["step5"],
    ]
    assert [a.can_subset for a in assets] == [False, True, True, False]


def test_the_component_loads_the_folder_through_dagster(tmp_path: Path) -> None:
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS)
    component = LakeDatasetSpecs(path=str(folder), catalog=f"{__name__}:CATALOG", name="test_specs")
    defs = dg.Definitions.merge(dg.build_defs_for_component(component), dg.Definitions(resources=NO_RESOURCES))
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey(["reports", "merchant_totals"]) in keys


def test_the_lending_merchant_performance_spec_keeps_its_key_schema_audit_and_backfill_policy() -> None:
    (dataset,) = [d for d in LENDING_SPEC_DATASETS if d.table.identifier == "reporting.merchant_performance"]
    assert dataset.table == REPORTING_MERCHANT_PERFORMANCE
    assert [i.table for i in dataset.inputs] == [CORE_LOAN_DAILY_STATUS, CORE_CLOSED_LOANS]
    (asset,) = [a for a in lending_spec_assets if REPORTING_MERCHANT_PERFORMANCE.asset_key in a.keys]
    assert [c.name for c in asset.check_specs] == ["merchant_balances_consistent"]
    assert asset.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=23)
    assert asset.op.pool == REPORTING_MERCHANT_PERFORMANCE.pool


# -- bad specs: one mistake each, the message names file, field and what is wrong ------------------------------------


def test_an_unknown_input_table_names_the_file_the_field_and_close_matches(tmp_path: Path) -> None:
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("table: core.loans", "table: core.loanz"))
    assert message.startswith("specs/x.yaml:")
    assert "inputs.loans.table: unknown table 'core.loanz' (close matches: core.loans)" in message


def test_sql_naming_an_undeclared_table_is_refused(tmp_path: Path) -> None:
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("  FROM loans\n", "  FROM core_loans\n"))
    assert "specs/x.yaml:" in message
    assert "sql: names table 'core_loans' which is no declared input (inputs: loans)" in message


def test_a_partition_column_missing_from_the_sql_output_is_refused(tmp_path: Path) -> None:
    text = MERCHANT_TOTALS.replace("SELECT business_date, merchant_id,", "SELECT merchant_id,").replace(
        "GROUP BY business_date, merchant_id", "GROUP BY merchant_id"
    )
    message = _load_error(tmp_path, text)
    assert (
        "specs/x.yaml:6: partition_column: 'business_date' is not among the SQL's output columns "
        "(merchant_id, loans, principal)"
    ) in message


def test_an_unknown_compute_profile_names_the_profiles(tmp_path: Path) -> None:
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("compute: medium", "compute: huge"))
    assert "specs/x.yaml:18: compute: unknown profile 'huge' (profiles: small, medium, large, xlarge)" in message


def test_a_malformed_window_names_the_windows_there_are(tmp_path: Path) -> None:
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("window: this_partition", "window: yesterday"))
    assert "specs/x.yaml:13: inputs.loans.window: unknown window 'yesterday' (windows: this_partition," in message
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("window: this_partition", "window: 'previous:0'"))
    assert "inputs.loans.window: invalid window 'previous:0': previous(n) needs n >= 1" in message


def test_a_yaml_schema_error_names_the_file_the_field_and_its_line(tmp_path: Path) -> None:
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("  unique: [", "  uniq: ["))
    assert "specs/x.yaml:21: audits.uniq: unknown field" in message
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("description: Principal lent per merchant and day.\n", ""))
    assert "specs/x.yaml: description: required field missing" in message
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("principal: decimal(18,2) not null", "principal: money"))
    assert "specs/x.yaml:11: columns.principal: unknown type 'money'" in message


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: [true, null, 1.5, '2', 2024-01-01, ~]\nc: {d: x}\n",
        "a: &x {b: 1}\nc: *x\n",  # an alias
        "<<: {a: 1}\nb: 2\n",  # a merge
        "a: 1\na: 2\n",  # a repeated key
        "1: x\n",  # a key that is no string
        "a: !!str 3\nb: !!binary aGVsbG8=\n",
        "- a\n- {b: c}\n",
        "",
        "x",
    ],
)
def test_the_spec_loader_constructs_what_the_safe_loader_does(text: str) -> None:
    import yaml

    from batch_platform.specs.load import Loader

    assert yaml.load(text, Loader=Loader) == yaml.load(text, Loader=yaml.SafeLoader)


def test_the_spec_loader_refuses_what_the_safe_loader_refuses() -> None:
    import yaml

    from batch_platform.specs.load import Loader

    for text in ["? [1]\n: x\n", "a: !foo x\n"]:
        with pytest.raises(yaml.constructor.ConstructorError):
            yaml.load(text, Loader=Loader)


def test_sql_outputs_and_declared_columns_must_agree(tmp_path: Path) -> None:
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("count(1) AS loans", "count(1) AS loan_count"))
    assert "sql: outputs no column ['loans'] of the declared columns" in message
    assert "sql: outputs ['loan_count'], which are not declared columns" in message


def test_select_star_is_expanded_from_the_inputs_and_an_unnamed_column_is_refused(tmp_path: Path) -> None:
    star = MERCHANT_TOTALS.replace("loans: long not null\n", "loan_id: long not null\n").replace(
        "SELECT business_date, merchant_id, count(1) AS loans, CAST(sum(principal) AS decimal(18,2)) AS principal\n"
        "  FROM loans\n  GROUP BY business_date, merchant_id",
        "SELECT * FROM loans",
    )
    star = star.replace("  unique: [business_date, merchant_id]\n", "")
    load_specs(_write_specs(tmp_path / "star", x=star), CATALOG)  # columns known from core.loans
    message = _load_error(tmp_path, MERCHANT_TOTALS.replace("count(1) AS loans", "count(1)"))
    assert "sql: output column 3 (COUNT(1)) has no name; alias it" in message


def test_every_wrong_file_is_reported_at_once(tmp_path: Path) -> None:
    folder = _write_specs(
        tmp_path / "specs",
        a=MERCHANT_TOTALS.replace("compute: medium", "compute: huge"),
        b=MERCHANT_TRENDS.replace("reports.merchant_totals", "reports.merchant_totalz").replace(
            "compute: medium", "compute: huge"
        ),
    )
    with pytest.raises(SpecError) as raised:
        load_specs(folder, CATALOG)
    assert [(p.file, p.field) for p in raised.value.problems] == [
        ("specs/a.yaml", "compute"),
        ("specs/b.yaml", "compute"),
        ("specs/b.yaml", "inputs.totals.table"),
    ]
    assert str(raised.value).startswith("3 problems in dataset specs:\n  specs/a.yaml:")


def test_one_table_read_through_two_windows_is_refused(tmp_path: Path) -> None:
    text = MERCHANT_TOTALS.replace(
        "  loans: {table: core.loans, window: this_partition}\n",
        "  loans: {table: core.loans, window: this_partition}\n  before: {table: core.loans, window: previous}\n",
    ).replace("  FROM loans\n", "  FROM loans JOIN before USING (loan_id)\n")
    message = _load_error(tmp_path, text)
    assert "inputs.before.table: core.loans is read by input 'loans' already" in message


def test_a_spec_of_a_table_the_domain_declares_must_declare_its_schema(tmp_path: Path) -> None:
    text = MERCHANT_TOTALS.replace("reports.merchant_totals", "core.loans")
    message = _load_error(tmp_path, text)
    assert "columns: differ from the domain's declaration of core.loans" in message


# -- on Spark and Iceberg ------------------------------------------------------------------------------------------


def _seed_loans(lake: IcebergLakeResource, rows: list[tuple[str, int, int, str]]) -> None:
    data = pa.Table.from_pylist(
        [
            {"business_date": date.fromisoformat(d), "loan_id": i, "merchant_id": m, "principal": Decimal(p)}
            for d, i, m, p in rows
        ],
        schema=LOANS.schema,
    )
    keys = sorted({r[0] for r in rows})
    lake.write_arrow(LOANS, data, partition_keys=keys, lineage=Lineage("test-seed", LOANS.identifier, tuple(keys)))


def test_spec_datasets_materialize_on_spark_and_iceberg_and_a_rerun_replaces_the_partition(
    tmp_path: Path, lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession
) -> None:
    # A second dataset of the first level, so that level runs as one multi-asset step.
    copy = MERCHANT_TOTALS.replace("reports.merchant_totals", "reports.merchant_totals_copy")
    folder = _write_specs(
        tmp_path / "specs", merchant_totals=MERCHANT_TOTALS, merchant_totals_copy=copy, merchant_trends=MERCHANT_TRENDS
    )
    datasets = load_specs(folder, CATALOG)
    assets = spec_assets("test_specs", datasets)
    assert sorted(len(a.keys) for a in assets) == [1, 2]
    _seed_loans(
        lake,
        [
            ("2024-01-01", 1, 10, "100.00"),
            ("2024-01-02", 2, 10, "50.00"),
            ("2024-01-02", 3, 10, "25.50"),
            ("2024-01-02", 4, 20, "10.00"),
        ],
    )
    resources = {"lake": lake, "spark": spark_resource}
    for day in ("2024-01-01", "2024-01-02"):
        assert dg.materialize(assets, partition_key=day, resources=resources).success
    rerun = dg.materialize(assets, partition_key="2024-01-02", resources=resources)
    assert rerun.success
    assert {e.check_name: e.passed for e in rerun.get_asset_check_evaluations()} == {
        "unique_business_date_merchant_id": True,
        "principal_is_positive": True,
        "not_null_merchant_id": True,
    }
    totals, _, trends = (d.table for d in datasets)
    day = ["2024-01-02"]
    got_totals = sorted(
        (r["merchant_id"], r["loans"], r["principal"]) for r in lake.read_arrow(totals, day).to_pylist()
    )
    assert got_totals == [(10, 2, Decimal("75.50")), (20, 1, Decimal("10.00"))]  # once, not twice
    got_trends = sorted(
        (r["merchant_id"], r["principal"], r["previous_principal"]) for r in lake.read_arrow(trends, day).to_pylist()
    )
    assert got_trends == [(10, Decimal("75.50"), Decimal("100.00")), (20, Decimal("10.00"), None)]
    # The SQL's input views lived for one query only.
    assert [t.name for t in spark.catalog.listTables() if t.isTemporary] == []


def _merchant_performance_frame_before_specs(status: DataFrame) -> DataFrame:
    """assets/lending/reporting.py's merchant_performance_frame as it was before the spec replaced it."""
    money = "decimal(18,2)"
    delinquent = F.col("status").isin("current", "delinquent") & (F.col("days_past_due") >= 30)
    return status.groupBy("business_date", "merchant_id").agg(
        F.max_by("merchant_category", F.struct("origination_date", "loan_id")).alias("merchant_category"),
        F.count(F.lit(1)).alias("loans"),
        F.sum("principal_originated").cast(money).alias("principal_originated"),
        F.sum("principal_refunded").cast(money).alias("principal_refunded"),
        F.sum("outstanding_principal").cast(money).alias("outstanding_principal"),
        F.count(F.when(delinquent, True)).alias("delinquent_loans"),
        F.sum(F.when(delinquent, F.col("outstanding_principal")).otherwise(F.lit(0)))
        .cast(money)
        .alias("delinquent_principal"),
        F.sum("principal_charged_off").cast(money).alias("principal_charged_off"),
    )


CLOSED = ["charged_off", "paid_off", "cancelled"]


def _random_status_rows(count: int) -> list[dict[str, Any]]:
    """Loan days with every case the frame distinguishes: each status, 29/30/31+ days past due, null and restated
    categories, ties on origination date, several days and merchants."""
    rng = random.Random(7)
    rows = []
    for loan_id in range(count):
        day = date(2024, 3, 25) + timedelta(days=rng.randrange(3))
        originated = date(2023, 10, 1) + timedelta(days=rng.randrange(5))
        amount = Decimal(rng.randrange(10_000, 500_000)) / 100
        outstanding = (amount * Decimal(rng.randrange(0, 100)) / 100).quantize(Decimal("0.01"))
        rows.append(
            {
                "business_date": day,
                "loan_id": loan_id,
                "origination_date": originated,
                "vintage_month": originated.replace(day=1),
                "term_months": 6,
                "risk_band": "A",
                "merchant_id": rng.randrange(6),
                "merchant_category": rng.choice([None, "apparel", "furniture", "electronics"]),
                "principal_originated": amount,
                "principal_repaid": amount - outstanding,
                "principal_refunded": Decimal(rng.choice(["0.00", "12.34"])),
                "principal_charged_off": Decimal(rng.choice(["0.00", "0.00", "99.99"])),
                "outstanding_principal": outstanding,
                "interest_paid": Decimal("0.00"),
                "accrued_interest": Decimal("0.00"),
                "days_past_due": rng.choice([0, 29, 30, 31, 119, 150]),
                "dpd_bucket": "current",
                "status": rng.choice(["current", "delinquent", "charged_off", "paid_off", "cancelled"]),
                "ever_30_plus": False,
                "ever_60_plus": False,
            }
        )
    return rows


def test_the_merchant_performance_spec_computes_what_its_python_frame_did_over_the_book_to_date(
    spark: SparkSession,
) -> None:
    """The spec reads the day's book and the loans closed earlier; its result is the Python frame's over every loan
    to date (reporting.book_to_date), closed loans counted with their final row on each later day."""
    from assets.lending.reporting import book_to_date
    from batch_platform.datasets import Step
    from batch_platform.lake.spark_io import spark_schema

    (dataset,) = [d for d in LENDING_SPEC_DATASETS if d.table.identifier == "reporting.merchant_performance"]
    schema = spark_schema(CORE_LOAN_DAILY_STATUS.schema)
    status = spark.createDataFrame(_random_status_rows(400), schema)
    closed_rows = [
        {**row, "loan_id": row["loan_id"] + 10_000, "status": random.Random(row["loan_id"]).choice(CLOSED)}
        for row in _random_status_rows(200)
    ]
    closed = spark.createDataFrame(closed_rows, schema)
    step = Step([d.isoformat() for d in (date(2024, 3, 25), date(2024, 3, 26), date(2024, 3, 27))], spark, None)
    columns = REPORTING_MERCHANT_PERFORMANCE.schema.names
    spec = dataset.transform(step=step, status=status, closed=closed).select(*columns)
    frame = _merchant_performance_frame_before_specs(book_to_date(step, status, closed)).select(*columns)
    assert [(f.name, f.dataType) for f in spec.schema.fields] == [(f.name, f.dataType) for f in frame.schema.fields]
    spec_rows, frame_rows = sorted(spec.collect(), key=repr), sorted(frame.collect(), key=repr)
    assert len(frame_rows) > 15 and any(r["delinquent_loans"] for r in frame_rows)
    # Loans closed on the first day count on the two later days, and not on their own day twice.
    loans_per_day = {
        d: sum(r["loans"] for r in frame_rows if r["business_date"].isoformat() == d) for d in step.partition_keys
    }
    on_day = {d: sum(1 for r in _random_status_rows(400) if r["business_date"].isoformat() == d) for d in loans_per_day}
    closed_before = {d: sum(1 for r in closed_rows if r["business_date"].isoformat() < d) for d in loans_per_day}
    assert loans_per_day == {d: on_day[d] + closed_before[d] for d in loans_per_day}
    assert spec_rows == frame_rows


def test_the_readme_example_spec_loads_against_the_lending_catalog(tmp_path: Path) -> None:
    from assets.lending.dataset_specs import LENDING_SPEC_CATALOG

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("### Add a dataset with a spec") :]
    example = section[section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))]
    (dataset,) = load_specs(_write_specs(tmp_path / "specs", merchant_refunds=example), LENDING_SPEC_CATALOG)
    assert dataset.table.identifier == "reporting.merchant_refunds"
    assert [a.name for a in dataset.audits] == ["unique_business_date_merchant_id_refund_type", "refunds_are_positive"]
