"""Reporting layer of the loan domain: portfolio, vintage curves and merchant performance per business day.

Merchant performance is a dataset spec (specs/merchant_performance.yaml): Spark SQL with the same conventions.

Every asset reads the book to date for the step's partition keys (a backfill run gets up to 23 of them and computes
them in one DataFrame): ``core/loan_daily_status`` of the day (open loans, and the loans closing that day) and
``core/closed_loans`` of every earlier day (each closed loan's final row), so every loan ever originated counts. It
writes through write-audit-publish, and publishes to main only when its blocking audits pass on the audit branch.

Conventions shared by the three tables:
- Money sums stay decimal and are cast back to decimal(18, 2) (Spark widens a sum to decimal(28, 2)); rates are
  doubles.
- A loan is *open* while its status is one of OPEN_STATUSES (tables.py). Closed loans (paid off, cancelled,
  charged off) count with their final to-date amounts (a charged-off loan in the days-past-due bucket it was charged
  off from), and the money columns sum them too, so that each row keeps the balance identity outstanding =
  originated - repaid - refunded - charged off.
"""

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from assets.lending.contract import MONEY_SQL
from assets.lending.dataset_specs import lending_spec_assets
from assets.lending.loan_book import days_frame
from assets.lending.tables import (
    BACKFILL,
    CORE_CLOSED_LOANS,
    CORE_LOAN_DAILY_STATUS,
    LENDING_PARTITIONS,
    LOAN_STATUSES,
    OPEN_STATUSES,
    PARTITION,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
)
from batch_platform.audit import Audit, AuditOutcome, rows_satisfy
from batch_platform.datasets import LakeDataset, Step, lake_dataset_asset
from batch_platform.inputs import LakeInput, up_to_this_partition
from batch_platform.lake import LakeTable

assert set(OPEN_STATUSES) < set(LOAN_STATUSES), "open statuses must be declared loan statuses"

PORTFOLIO_GROUPS = (PARTITION, "vintage_month", "term_months", "risk_band", "merchant_category", "dpd_bucket")
BALANCE_COLUMNS = (
    "principal_originated",
    "principal_repaid",
    "principal_refunded",
    "principal_charged_off",
    "outstanding_principal",
)


def money_sum(column: str | Column, alias: str) -> Column:
    return F.sum(column).cast(MONEY_SQL).alias(alias)


def is_open() -> Column:
    return F.col("status").isin(*OPEN_STATUSES)


def ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator as a double; 0.0 for an empty denominator (the rate columns are NOT NULL)."""
    return F.when(denominator != 0, numerator.cast("double") / denominator.cast("double")).otherwise(F.lit(0.0))


# -- computations (DataFrame in, DataFrame out: the assets below only read, compute and write) ------------------


def book_to_date(step: Step, status: DataFrame, closed: DataFrame) -> DataFrame:
    """Every loan originated by each of the step's days, one row each: the day's book, and the loans closed on an
    earlier day (their final row, dated the day). ``closed``: core/closed_loans up to the step's last day."""
    days = days_frame(step.session, step.partition_keys)
    earlier = (
        closed.withColumnRenamed(PARTITION, "_closed_on")
        .join(F.broadcast(days), F.col("_closed_on") < F.col(PARTITION))
        .drop("_closed_on")
    )
    return status.unionByName(earlier)


def portfolio_daily_frame(status: DataFrame) -> DataFrame:
    """Per business date and group: open loans, and balances summed over all loans of the group.

    ``loans`` counts open loans only (the portfolio a risk team manages); the money columns include closed loans,
    whose outstanding principal is normally zero, so the balance identity holds per group and in total.
    """
    return status.groupBy(*PORTFOLIO_GROUPS).agg(
        F.count(F.when(is_open(), True)).alias("loans"),
        *[money_sum(c, c) for c in BALANCE_COLUMNS],
    )


def months_between(later: Column, earlier: Column) -> Column:
    """Whole calendar months from earlier's month to later's month (days ignored)."""
    return ((F.year(later) * 12 + F.month(later)) - (F.year(earlier) * 12 + F.month(earlier))).cast("int")


def vintage_curves_frame(status: DataFrame) -> DataFrame:
    """Per business date and vintage: the cohort's size and its to-date delinquency and charge-off rates.

    The ever_* flags and principal_charged_off are cumulative in loan_daily_status, so one date's partition
    already holds the curve's point at that date's months on book; the curve is the history of partitions.
    Cohorts include every loan originated in the month, closed ones too (a cohort never shrinks).
    """
    per_vintage = status.groupBy(PARTITION, "vintage_month").agg(
        F.count(F.lit(1)).alias("loans"),
        F.sum("principal_originated").alias("_originated"),
        F.sum("principal_charged_off").alias("_charged_off"),
        F.avg(F.col("ever_30_plus").cast("double")).alias("ever_30_plus_rate"),
        F.avg(F.col("ever_60_plus").cast("double")).alias("ever_60_plus_rate"),
    )
    return per_vintage.select(
        PARTITION,
        "vintage_month",
        months_between(F.col(PARTITION), F.col("vintage_month")).alias("months_on_book"),
        "loans",
        F.col("_originated").cast(MONEY_SQL).alias("principal_originated"),
        "ever_30_plus_rate",
        "ever_60_plus_rate",
        ratio(F.col("_charged_off"), F.col("_originated")).alias("charge_off_rate"),
    )


# -- audits ---------------------------------------------------------------------------------------------------


def _unreconciled_portfolio_rows(df: DataFrame) -> AuditOutcome:
    expected = (
        F.col("principal_originated")
        - F.col("principal_repaid")
        - F.col("principal_refunded")
        - F.col("principal_charged_off")
    )
    # The sample shows each failing group with its expected balance and the gap, for the operator.
    failures = (
        df.withColumn("expected_outstanding", expected)
        .withColumn("difference", F.col("outstanding_principal") - F.col("expected_outstanding"))
        .where(~F.coalesce(F.col("difference") == 0, F.lit(False)))
    )
    return AuditOutcome.from_failures(failures)


PORTFOLIO_AUDITS = [
    Audit(
        "portfolio_reconciles",
        "outstanding_principal = principal_originated - principal_repaid - principal_refunded - "
        "principal_charged_off, to the cent, in every row",
        _unreconciled_portfolio_rows,
    ),
]


def _is_share(column: str) -> Column:
    return F.col(column).between(0.0, 1.0)


VINTAGE_AUDITS = [
    rows_satisfy(
        "vintage_rates_are_shares",
        "ever_30_plus_rate, ever_60_plus_rate and charge_off_rate lie in [0, 1], and 60+ never exceeds 30+",
        lambda: (
            _is_share("ever_30_plus_rate")
            & _is_share("ever_60_plus_rate")
            & _is_share("charge_off_rate")
            & (F.col("ever_60_plus_rate") <= F.col("ever_30_plus_rate"))
        ),
    ),
]

# -- assets ---------------------------------------------------------------------------------------------------


def reporting_dataset(
    table: LakeTable, audits: list[Audit], frame: Callable[[DataFrame], DataFrame], compute: str = "small"
) -> LakeDataset:
    """A reporting table computed from the book to date (``book_to_date``), written through WAP."""

    def transform(step: Step, status: DataFrame, closed: DataFrame) -> DataFrame:
        return frame(book_to_date(step, status, closed))

    return LakeDataset(
        table,
        transform,
        inputs=[
            LakeInput(CORE_LOAN_DAILY_STATUS, name="status"),
            LakeInput(CORE_CLOSED_LOANS, up_to_this_partition(), name="closed"),
        ],
        audits=audits,
        partitions_def=LENDING_PARTITIONS,
        backfill_policy=BACKFILL,
        compute=compute,
    )


PORTFOLIO_DAILY = reporting_dataset(REPORTING_PORTFOLIO_DAILY, PORTFOLIO_AUDITS, portfolio_daily_frame, "medium")
VINTAGE_CURVES = reporting_dataset(REPORTING_VINTAGE_CURVES, VINTAGE_AUDITS, vintage_curves_frame)

REPORTING_DATASETS = [PORTFOLIO_DAILY, VINTAGE_CURVES]
# merchant_performance is a spec: specs/merchant_performance.yaml (assets/lending/dataset_specs.py).
reporting_assets = [*(lake_dataset_asset(dataset) for dataset in REPORTING_DATASETS), *lending_spec_assets]
