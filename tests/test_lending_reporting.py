"""Reporting assets of the loan domain on hand-made core data; every expected number is worked out by hand below.

The book (merchant: loans), over three business days D1 = Thu 2024-03-28, D2 = Fri 2024-03-29, D3 = Mon 2024-04-01:
- merchant 10, electronics: L1 (2024-01 vintage, 6 months, band A, 1200.00) current, repays 200.00 on D3;
  L2 (2024-01, 6, A, 600.00) 29 days past due on D1, 30 on D2 (ever 30+ from then), 33 on D3.
- merchant 20, furniture: L3 (2023-11, 12, C, 2000.00) 119 days past due on D1, charged off 1700.00 on D2;
  L5 (2023-11, 12, C, 900.00) was 30+ once, pays off its last 450.00 on D3.
- merchant 30, apparel: L4 (2024-02, 3, B, 300.00) fully refunded, cancelled; L6 (2024-02, 3, B, 800.00) 200.00
  refunded and 100.00 repaid.
- merchant 40, no category: L7 (2024-04, 6, A, 450.00) originated on D3.
"""

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from assets.lending.reporting import reporting_assets
from assets.lending.tables import (
    CORE_CLOSED_LOANS,
    CORE_LOAN_DAILY_STATUS,
    OPEN_STATUSES,
    REPORTING_MERCHANT_PERFORMANCE,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
)
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.spark import SparkResource

D1, D2, D3 = "2024-03-28", "2024-03-29", "2024-04-01"
DAYS = (D1, D2, D3)
NOV, JAN, FEB, APR = date(2023, 11, 1), date(2024, 1, 1), date(2024, 2, 1), date(2024, 4, 1)

# loan_id: (merchant_id, category, origination_date, vintage, term, band, principal)
LOANS: dict[int, tuple[int, str | None, date, date, int, str, str]] = {
    1: (10, "electronics", date(2024, 1, 15), JAN, 6, "A", "1200.00"),
    2: (10, "electronics", date(2024, 1, 22), JAN, 6, "A", "600.00"),
    3: (20, "furniture", date(2023, 11, 6), NOV, 12, "C", "2000.00"),
    4: (30, "apparel", date(2024, 2, 12), FEB, 3, "B", "300.00"),
    5: (20, "furniture", date(2023, 11, 8), NOV, 12, "C", "900.00"),
    6: (30, "apparel", date(2024, 2, 14), FEB, 3, "B", "800.00"),
    7: (40, None, date(2024, 4, 1), APR, 6, "A", "450.00"),
}

# (day, loan_id): (repaid, refunded, charged_off, outstanding, days_past_due, bucket, status, ever_30, ever_60)
Status = tuple[str, str, str, str, int, str, str, bool, bool]
STATUS: dict[tuple[str, int], Status] = {
    (D1, 1): ("400.00", "0.00", "0.00", "800.00", 0, "current", "current", False, False),
    (D1, 2): ("100.00", "0.00", "0.00", "500.00", 29, "1-29", "delinquent", False, False),
    (D1, 3): ("300.00", "0.00", "0.00", "1700.00", 119, "90-119", "delinquent", True, True),
    (D1, 4): ("0.00", "300.00", "0.00", "0.00", 0, "current", "cancelled", False, False),
    (D1, 5): ("450.00", "0.00", "0.00", "450.00", 0, "current", "current", True, False),
    (D1, 6): ("100.00", "200.00", "0.00", "500.00", 0, "current", "current", False, False),
    (D2, 1): ("400.00", "0.00", "0.00", "800.00", 0, "current", "current", False, False),
    (D2, 2): ("100.00", "0.00", "0.00", "500.00", 30, "30-59", "delinquent", True, False),
    (D2, 3): ("300.00", "0.00", "1700.00", "0.00", 120, "120+", "charged_off", True, True),
    (D2, 4): ("0.00", "300.00", "0.00", "0.00", 0, "current", "cancelled", False, False),
    (D2, 5): ("450.00", "0.00", "0.00", "450.00", 0, "current", "current", True, False),
    (D2, 6): ("100.00", "200.00", "0.00", "500.00", 0, "current", "current", False, False),
    (D3, 1): ("600.00", "0.00", "0.00", "600.00", 0, "current", "current", False, False),
    (D3, 2): ("100.00", "0.00", "0.00", "500.00", 33, "30-59", "delinquent", True, False),
    (D3, 3): ("300.00", "0.00", "1700.00", "0.00", 123, "120+", "charged_off", True, True),
    (D3, 4): ("0.00", "300.00", "0.00", "0.00", 0, "current", "cancelled", False, False),
    (D3, 5): ("900.00", "0.00", "0.00", "0.00", 0, "current", "paid_off", True, False),
    (D3, 6): ("100.00", "200.00", "0.00", "500.00", 0, "current", "current", False, False),
    (D3, 7): ("0.00", "0.00", "0.00", "450.00", 0, "current", "current", False, False),
}


def _d(value: str) -> Decimal:
    return Decimal(value)


def _status_rows(status: dict[tuple[str, int], Status]) -> list[dict[str, Any]]:
    rows = []
    for (day, loan_id), (repaid, refunded, charged_off, outstanding, dpd, bucket, state, e30, e60) in status.items():
        merchant, category, originated, vintage, term, band, principal = LOANS[loan_id]
        rows.append(
            {
                "business_date": date.fromisoformat(day),
                "loan_id": loan_id,
                "origination_date": originated,
                "vintage_month": vintage,
                "term_months": term,
                "risk_band": band,
                "merchant_id": merchant,
                "merchant_category": category,
                "principal_originated": _d(principal),
                "principal_repaid": _d(repaid),
                "principal_refunded": _d(refunded),
                "principal_charged_off": _d(charged_off),
                "outstanding_principal": _d(outstanding),
                "interest_paid": _d("0.00"),
                "accrued_interest": _d("0.00"),
                "days_past_due": dpd,
                "dpd_bucket": bucket,
                "status": state,
                "ever_30_plus": e30,
                "ever_60_plus": e60,
            }
        )
    return rows


def _write(lake: IcebergLakeResource, table: LakeTable, rows: list[dict[str, Any]]) -> None:
    keys = sorted({r["business_date"].isoformat() for r in rows})
    data = pa.Table.from_pylist(rows, schema=table.schema)
    lake.write_arrow(table, data, partition_keys=keys, lineage=Lineage("test-seed", table.identifier, tuple(keys)))


def _seed(lake: IcebergLakeResource, status: dict[tuple[str, int], Status] = STATUS) -> None:
    """The book as core writes it: a loan's rows up to the day it closes, that day's row also in closed_loans."""
    book, closed, closed_loans = [], [], set()
    for row in sorted(_status_rows(status), key=lambda r: r["business_date"]):
        if row["loan_id"] in closed_loans:
            continue
        book.append(row)
        if row["status"] not in OPEN_STATUSES:
            closed.append(row)
            closed_loans.add(row["loan_id"])
    _write(lake, CORE_LOAN_DAILY_STATUS, book)
    _write(lake, CORE_CLOSED_LOANS, closed)


def _materialize(
    lake: IcebergLakeResource,
    spark_resource: SparkResource,
    assets: list[dg.AssetsDefinition],
    *,
    partition_key: str | None = None,
    partition_range: tuple[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    tags = (
        {
            "dagster/asset_partition_range_start": partition_range[0],
            "dagster/asset_partition_range_end": partition_range[1],
        }
        if partition_range
        else None
    )
    return dg.materialize(
        assets,
        partition_key=partition_key,
        tags=tags,
        resources={"lake": lake, "spark": spark_resource},
        raise_on_error=False,
    )


def _rows(lake: IcebergLakeResource, table: LakeTable, day: str, columns: list[str]) -> list[tuple[Any, ...]]:
    data = lake.read_arrow(table, [day]).select(columns).to_pylist()
    return sorted((tuple(r[c] for c in columns) for r in data), key=repr)


# -- one three-day backfill run of the three assets, shared by the tests that read its output ----------------------


@pytest.fixture(scope="module")
def backfilled(
    tmp_path_factory: pytest.TempPathFactory, spark_resource: SparkResource, spark: SparkSession
) -> Iterator[tuple[IcebergLakeResource, dg.ExecuteInProcessResult]]:
    lake = IcebergLakeResource(data_dir=str(Path(tmp_path_factory.mktemp("reporting")) / "lake"))
    _seed(lake)
    result = _materialize(lake, spark_resource, reporting_assets, partition_range=(D1, D3))
    yield lake, result


def test_a_backfill_run_writes_every_day_of_its_range_in_one_step_and_passes_its_audits(
    backfilled: tuple[IcebergLakeResource, dg.ExecuteInProcessResult],
) -> None:
    lake, result = backfilled
    assert result.success
    for table in (REPORTING_PORTFOLIO_DAILY, REPORTING_VINTAGE_CURVES, REPORTING_MERCHANT_PERFORMANCE):
        materializations = [m for m in result.get_asset_materialization_events() if m.asset_key == table.asset_key]
        # One step for the range: one materialization event per partition key, all from one commit.
        assert sorted(str(m.partition) for m in materializations) == list(DAYS), table.identifier
        assert len({m.materialization.metadata["iceberg/snapshot_id"].value for m in materializations}) == 1
        head = lake.load(table).current_snapshot()
        assert head is not None and head.summary is not None
        assert head.summary["dagster.partition-keys"] == ",".join(DAYS)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "portfolio_reconciles": True,
        "vintage_rates_are_shares": True,
        "merchant_balances_consistent": True,
    }


PORTFOLIO_COLUMNS = [
    "vintage_month",
    "term_months",
    "risk_band",
    "merchant_category",
    "dpd_bucket",
    "loans",
    "outstanding_principal",
    "principal_originated",
    "principal_repaid",
    "principal_refunded",
    "principal_charged_off",
]


def _money(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (
            D1,
            [
                # vintage, term, band, category, bucket, open loans, outstanding, originated, repaid, refunded, c/o
                (JAN, 6, "A", "electronics", "current", 1, *_money("800.00", "1200.00", "400.00", "0.00", "0.00")),
                (JAN, 6, "A", "electronics", "1-29", 1, *_money("500.00", "600.00", "100.00", "0.00", "0.00")),
                (NOV, 12, "C", "furniture", "90-119", 1, *_money("1700.00", "2000.00", "300.00", "0.00", "0.00")),
                (NOV, 12, "C", "furniture", "current", 1, *_money("450.00", "900.00", "450.00", "0.00", "0.00")),
                # L4 (cancelled, fully refunded) and L6: one open loan, both loans' amounts.
                (FEB, 3, "B", "apparel", "current", 1, *_money("500.00", "1100.00", "100.00", "500.00", "0.00")),
            ],
        ),
        (
            D2,
            [
                (JAN, 6, "A", "electronics", "current", 1, *_money("800.00", "1200.00", "400.00", "0.00", "0.00")),
                (JAN, 6, "A", "electronics", "30-59", 1, *_money("500.00", "600.00", "100.00", "0.00", "0.00")),
                # L3 charged off: no open loan left in the group, its amounts stay.
                (NOV, 12, "C", "furniture", "120+", 0, *_money("0.00", "2000.00", "300.00", "0.00", "1700.00")),
                (NOV, 12, "C", "furniture", "current", 1, *_money("450.00", "900.00", "450.00", "0.00", "0.00")),
                (FEB, 3, "B", "apparel", "current", 1, *_money("500.00", "1100.00", "100.00", "500.00", "0.00")),
            ],
        ),
        (
            D3,
            [
                (JAN, 6, "A", "electronics", "current", 1, *_money("600.00", "1200.00", "600.00", "0.00", "0.00")),
                (JAN, 6, "A", "electronics", "30-59", 1, *_money("500.00", "600.00", "100.00", "0.00", "0.00")),
                (NOV, 12, "C", "furniture", "120+", 0, *_money("0.00", "2000.00", "300.00", "0.00", "1700.00")),
                # L5 paid off.
                (NOV, 12, "C", "furniture", "current", 0, *_money("0.00", "900.00", "900.00", "0.00", "0.00")),
                (FEB, 3, "B", "apparel", "current", 1, *_money("500.00", "1100.00", "100.00", "500.00", "0.00")),
                (APR, 6, "A", None, "current", 1, *_money("450.00", "450.00", "0.00", "0.00", "0.00")),
            ],
        ),
    ],
)
def test_portfolio_counts_open_loans_and_sums_every_loans_balances_per_group(
    backfilled: tuple[IcebergLakeResource, dg.ExecuteInProcessResult], day: str, expected: list[tuple[Any, ...]]
) -> None:
    lake, _ = backfilled
    assert _rows(lake, REPORTING_PORTFOLIO_DAILY, day, PORTFOLIO_COLUMNS) == sorted(expected, key=repr)


@pytest.mark.parametrize(
    ("day", "open_loans", "totals"),
    [
        # outstanding, originated, repaid, refunded, charged off
        (D1, 5, _money("3950.00", "5800.00", "1350.00", "500.00", "0.00")),
        (D2, 4, _money("2250.00", "5800.00", "1350.00", "500.00", "1700.00")),
        (D3, 4, _money("2050.00", "6250.00", "2000.00", "500.00", "1700.00")),
    ],
)
def test_portfolio_totals_reconcile_to_the_cent(
    backfilled: tuple[IcebergLakeResource, dg.ExecuteInProcessResult],
    day: str,
    open_loans: int,
    totals: tuple[Decimal, ...],
) -> None:
    lake, _ = backfilled
    rows = _rows(lake, REPORTING_PORTFOLIO_DAILY, day, PORTFOLIO_COLUMNS[5:])
    assert sum(r[0] for r in rows) == open_loans
    summed = tuple(sum((r[i] for r in rows), Decimal("0.00")) for i in range(1, 6))
    assert summed == totals
    outstanding, originated, repaid, refunded, charged_off = summed
    assert outstanding == originated - repaid - refunded - charged_off
    assert all(r[1] == r[2] - r[3] - r[4] - r[5] for r in rows)


VINTAGE_COLUMNS = [
    "vintage_month",
    "months_on_book",
    "loans",
    "principal_originated",
    "ever_30_plus_rate",
    "ever_60_plus_rate",
    "charge_off_rate",
]


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (
            D1,
            [
                # vintage, months on book, loans, originated, ever 30+, ever 60+, charge-off rate
                (NOV, 4, 2, Decimal("2900.00"), 1.0, 0.5, 0.0),
                (JAN, 2, 2, Decimal("1800.00"), 0.0, 0.0, 0.0),
                (FEB, 1, 2, Decimal("1100.00"), 0.0, 0.0, 0.0),
            ],
        ),
        (
            D2,
            [
                (NOV, 4, 2, Decimal("2900.00"), 1.0, 0.5, 1700 / 2900),
                (JAN, 2, 2, Decimal("1800.00"), 0.5, 0.0, 0.0),
                (FEB, 1, 2, Decimal("1100.00"), 0.0, 0.0, 0.0),
            ],
        ),
        (
            D3,
            [
                # April: months on book move up by one; the paid-off L5 stays in its cohort.
                (NOV, 5, 2, Decimal("2900.00"), 1.0, 0.5, 1700 / 2900),
                (JAN, 3, 2, Decimal("1800.00"), 0.5, 0.0, 0.0),
                (FEB, 2, 2, Decimal("1100.00"), 0.0, 0.0, 0.0),
                (APR, 0, 1, Decimal("450.00"), 0.0, 0.0, 0.0),
            ],
        ),
    ],
)
def test_vintage_curves_give_one_row_per_cohort_with_months_on_book_and_to_date_rates(
    backfilled: tuple[IcebergLakeResource, dg.ExecuteInProcessResult], day: str, expected: list[tuple[Any, ...]]
) -> None:
    lake, _ = backfilled
    rows = _rows(lake, REPORTING_VINTAGE_CURVES, day, VINTAGE_COLUMNS)
    assert [r[:4] for r in rows] == [e[:4] for e in sorted(expected, key=repr)]
    assert [r[4:] for r in rows] == [pytest.approx(e[4:], abs=1e-12) for e in sorted(expected, key=repr)]


MERCHANT_COLUMNS = [
    "merchant_id",
    "merchant_category",
    "loans",
    "principal_originated",
    "principal_refunded",
    "outstanding_principal",
    "delinquent_loans",
    "delinquent_principal",
    "principal_charged_off",
]


def _merchant(
    merchant: int, category: str | None, loans: int, originated: str, refunded: str, outstanding: str, *rest: Any
) -> tuple[Any, ...]:
    delinquent_loans, delinquent, charged_off = rest
    return (
        merchant,
        category,
        loans,
        *_money(originated, refunded, outstanding),
        delinquent_loans,
        *_money(delinquent, charged_off),
    )


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (
            D1,
            [
                # L2 at 29 days is not delinquent yet; L3 at 119 is.
                _merchant(10, "electronics", 2, "1800.00", "0.00", "1300.00", 0, "0.00", "0.00"),
                _merchant(20, "furniture", 2, "2900.00", "0.00", "2150.00", 1, "1700.00", "0.00"),
                _merchant(30, "apparel", 2, "1100.00", "500.00", "500.00", 0, "0.00", "0.00"),
            ],
        ),
        (
            D2,
            [
                # L3 charged off: out of delinquency, into charge-offs.
                _merchant(10, "electronics", 2, "1800.00", "0.00", "1300.00", 1, "500.00", "0.00"),
                _merchant(20, "furniture", 2, "2900.00", "0.00", "450.00", 0, "0.00", "1700.00"),
                _merchant(30, "apparel", 2, "1100.00", "500.00", "500.00", 0, "0.00", "0.00"),
            ],
        ),
        (
            D3,
            [
                _merchant(10, "electronics", 2, "1800.00", "0.00", "1100.00", 1, "500.00", "0.00"),
                _merchant(20, "furniture", 2, "2900.00", "0.00", "0.00", 0, "0.00", "1700.00"),
                _merchant(30, "apparel", 2, "1100.00", "500.00", "500.00", 0, "0.00", "0.00"),
                _merchant(40, None, 1, "450.00", "0.00", "450.00", 0, "0.00", "0.00"),
            ],
        ),
    ],
)
def test_merchant_performance_sums_each_merchants_loans_and_counts_open_30_plus_loans_as_delinquent(
    backfilled: tuple[IcebergLakeResource, dg.ExecuteInProcessResult], day: str, expected: list[tuple[Any, ...]]
) -> None:
    lake, _ = backfilled
    assert _rows(lake, REPORTING_MERCHANT_PERFORMANCE, day, MERCHANT_COLUMNS) == sorted(expected, key=repr)


# -- failures ----------------------------------------------------------------------------------------------------


def test_an_unreconciled_balance_fails_the_blocking_audit_and_leaves_main_unchanged(
    lake: IcebergLakeResource, spark_resource: SparkResource, spark: SparkSession
) -> None:
    day_one = {k: v for k, v in STATUS.items() if k[0] == D1}
    _seed(lake, day_one)
    portfolio = [a for a in reporting_assets if REPORTING_PORTFOLIO_DAILY.asset_key in a.keys]
    assert _materialize(lake, spark_resource, portfolio, partition_key=D1).success
    main_before = lake.load(REPORTING_PORTFOLIO_DAILY).current_snapshot()
    rows_before = _rows(lake, REPORTING_PORTFOLIO_DAILY, D1, PORTFOLIO_COLUMNS)

    # Core restates L6 with 10.00 of principal that no originated, repaid, refunded or charged-off amount explains.
    broken = dict(day_one)
    broken[(D1, 6)] = ("100.00", "200.00", "0.00", "510.00", 0, "current", "current", False, False)
    _write(lake, CORE_LOAN_DAILY_STATUS, _status_rows(broken))
    result = _materialize(lake, spark_resource, portfolio, partition_key=D1)

    assert not result.success
    assert lake.load(REPORTING_PORTFOLIO_DAILY).current_snapshot() == main_before
    assert _rows(lake, REPORTING_PORTFOLIO_DAILY, D1, PORTFOLIO_COLUMNS) == rows_before
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "portfolio_reconciles"
    assert not evaluation.passed
    assert evaluation.metadata["failing_rows"].value == 1
    sample = evaluation.metadata["failing_sample"].value
    assert isinstance(sample, list)
    (failing,) = sample
    assert failing["merchant_category"] == "apparel"
    assert (failing["outstanding_principal"], failing["expected_outstanding"], failing["difference"]) == (
        "510.00",
        "500.00",
        "10.00",
    )
    assert (failing["principal_originated"], failing["principal_repaid"], failing["principal_refunded"]) == (
        "1100.00",
        "100.00",
        "500.00",
    )
