"""The loan pipeline end to end: simulated landing drops through raw, core and reporting, on real Spark and Iceberg.

The lender's first 35 business days are simulated (payments start about a month after the first originations),
then raw, core and reporting run as one partition-range run, as a backfill would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark.sql import SparkSession

from assets.lending.contract import LENDING_START, business_days
from assets.lending.core import core_assets
from assets.lending.landing import LandingZone, LandingZoneResource, read_drop
from assets.lending.raw import raw_assets
from assets.lending.reporting import reporting_assets
from assets.lending.simulator import simulate
from assets.lending.tables import (
    CORE_CLOSED_LOANS,
    CORE_LEDGER_ENTRIES,
    CORE_LOAN_DAILY_STATUS,
    PARTITION,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
)
from assets.lending.world import SimulationConfig
from batch_platform.lake import IcebergLakeResource
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource

FIRST = date.fromisoformat(LENDING_START)
DAYS = list(business_days(FIRST, date(2023, 2, 17)))
LAST = DAYS[-1]
TEST_PII_KEY = "test-only-hmac-key-0123456789abcdef0123"


@dataclass
class Pipeline:
    lake: IcebergLakeResource
    landing: LandingZone
    results: list[dg.ExecuteInProcessResult]


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, spark_resource: SparkResource, spark: SparkSession
) -> Iterator[Pipeline]:
    root: Path = tmp_path_factory.mktemp("lending")
    landing = LandingZone.local(root / "landing")
    simulate(SimulationConfig(seed=11, start=FIRST, scale=0.05), FIRST, LAST, landing)
    lake = IcebergLakeResource(data_dir=str(root / "lake"))
    resources = {
        "lake": lake,
        "spark": spark_resource,
        "landing": LandingZoneResource(uri=str(root / "landing")),
        "pii": PiiTokenizer(key=TEST_PII_KEY),
    }
    instance = dg.DagsterInstance.ephemeral()
    # One partition-range run over every asset, as one run of a backfill: raw loads each day's drop, the day-chained
    # loan book walks the days in order, the rest compute all days at once.
    result = dg.materialize(
        [*raw_assets, *core_assets, *reporting_assets],
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": FIRST.isoformat(),
            "dagster/asset_partition_range_end": LAST.isoformat(),
        },
    )
    results = [result]
    yield Pipeline(lake, landing, results)


def test_every_run_succeeds_and_every_check_passes(pipeline: Pipeline) -> None:
    assert all(r.success for r in pipeline.results)
    failed = [
        (e.asset_key.to_user_string(), e.check_name, e.metadata)
        for r in pipeline.results
        for e in r.get_asset_check_evaluations()
        if not e.passed
    ]
    assert failed == []
    checked = {e.check_name for r in pipeline.results for e in r.get_asset_check_evaluations()}
    assert {"references_a_loan", "balances_reconcile", "ledger_balances", "portfolio_reconciles"} <= checked


def _cents(value: Decimal) -> int:
    return int(value * 100)


def test_portfolio_daily_reconciles_with_a_plain_recomputation_from_the_landing_files(pipeline: Pipeline) -> None:
    """Outstanding principal per (vintage, term, band, category) on the last day, recomputed from the drops."""
    loans: dict[int, tuple[date, int, str, int]] = {}
    merchants: dict[int, str] = {}
    reduced: dict[int, int] = defaultdict(int)
    for day in DAYS:
        drop = read_drop(pipeline.landing, day)
        merchants.update(
            zip(drop["merchants"]["merchant_id"].to_pylist(), drop["merchants"]["category"].to_pylist(), strict=True)
        )
        for row in drop["loans"].to_pylist():
            loans[row["loan_id"]] = (row["origination_date"], row["term_months"], row["risk_band"], row["merchant_id"])
            reduced[row["loan_id"]] -= row["principal_cents"]
        payments = drop["payments"].filter(pc.invert(drop["payments"]["reversed"]))
        for loan_id, principal in zip(
            payments["loan_id"].to_pylist(), payments["principal_cents"].to_pylist(), strict=True
        ):
            reduced[loan_id] += principal
        for name, column in (("refunds", "amount_cents"), ("charge_offs", "principal_cents")):
            for loan_id, amount in zip(drop[name]["loan_id"].to_pylist(), drop[name][column].to_pylist(), strict=True):
                reduced[loan_id] += amount
    expected: dict[tuple[date, int, str, str | None], int] = defaultdict(int)
    for loan_id, (origination, term, band, merchant_id) in loans.items():
        group = (origination.replace(day=1), term, band, merchants.get(merchant_id))
        expected[group] += -reduced[loan_id]

    portfolio = pipeline.lake.read_arrow(REPORTING_PORTFOLIO_DAILY, [LAST.isoformat()])
    actual: dict[tuple[date, int, str, str | None], int] = defaultdict(int)
    for row in portfolio.to_pylist():
        group = (row["vintage_month"], row["term_months"], row["risk_band"], row["merchant_category"])
        actual[group] += _cents(row["outstanding_principal"])
    assert {k: v for k, v in actual.items() if v} == {k: v for k, v in expected.items() if v}
    assert sum(actual.values()) > 0


def test_loan_daily_status_has_every_loan_once_per_day_with_payments_reducing_balances(pipeline: Pipeline) -> None:
    status = pipeline.lake.read_arrow(CORE_LOAN_DAILY_STATUS, [LAST.isoformat()])
    ids = status["loan_id"].to_pylist()
    assert len(ids) == len(set(ids)) > 0
    assert pc.sum(status["principal_repaid"]).as_py() > 0
    buckets = set(status["dpd_bucket"].to_pylist())
    assert "current" in buckets


def test_a_closed_loan_leaves_the_book_after_its_final_row_and_still_counts_in_its_vintage(pipeline: Pipeline) -> None:
    closed = pipeline.lake.read_arrow(CORE_CLOSED_LOANS).to_pylist()
    assert closed and {r["status"] for r in closed} <= {"paid_off", "cancelled", "charged_off"}
    book = pipeline.lake.read_arrow(CORE_LOAN_DAILY_STATUS).select([PARTITION, "loan_id", "status"]).to_pylist()
    last_row = {}
    for row in sorted(book, key=lambda r: r[PARTITION]):
        last_row[row["loan_id"]] = row
    for loan in closed:
        assert last_row[loan["loan_id"]][PARTITION] == loan[PARTITION]  # no row after the final one
        assert last_row[loan["loan_id"]]["status"] == loan["status"]
    originated = sum(read_drop(pipeline.landing, day)["loans"].num_rows for day in DAYS)
    vintages = pipeline.lake.read_arrow(REPORTING_VINTAGE_CURVES, [LAST.isoformat()])
    assert pc.sum(vintages["loans"]).as_py() == originated  # a cohort never shrinks


def test_ledger_debits_equal_credits_every_day(pipeline: Pipeline) -> None:
    ledger = pipeline.lake.read_arrow(CORE_LEDGER_ENTRIES)
    per_day: dict[date, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for row in ledger.select(["business_date", "debit", "credit"]).to_pylist():
        per_day[row["business_date"]][0] += row["debit"]
        per_day[row["business_date"]][1] += row["credit"]
    assert set(per_day) == set(DAYS)
    assert all(debits == credits for debits, credits in per_day.values())
    assert isinstance(ledger.schema.field("debit").type, pa.Decimal128Type)


PII_COLUMNS = ("first_name", "last_name", "email", "phone", "national_id", "street_address", "date_of_birth")


def test_no_clear_pii_outside_raw_customers(pipeline: Pipeline) -> None:
    """Scans the schema and every value of every other table for the customers' names, contacts, ids, birth dates."""
    customers = pipeline.lake.catalog().load_table("raw.customers").scan().to_arrow()
    pii_values: set[object] = set()
    for column in PII_COLUMNS:
        pii_values |= {v for v in customers[column].to_pylist() if v is not None}
    assert len(pii_values) > 100

    catalog = pipeline.lake.catalog()
    scanned = []
    for namespace in catalog.list_namespaces():
        for identifier in catalog.list_tables(namespace):
            name = ".".join(identifier)
            if name == "raw.customers":
                continue
            data = catalog.load_table(identifier).scan().to_arrow()
            assert not set(PII_COLUMNS) & set(data.column_names), f"{name} has a PII column"
            for column in data.column_names:
                values = data[column]
                if pa.types.is_string(values.type) or pa.types.is_date(values.type):
                    leaked = pii_values & set(values.to_pylist())
                    assert not leaked, f"{name}.{column} holds clear PII, e.g. {sorted(map(str, leaked))[:3]}"
            scanned.append(name)
    assert {"core.customers", "core.loans", "raw.quarantine", "reporting.portfolio_daily"} <= set(scanned)
