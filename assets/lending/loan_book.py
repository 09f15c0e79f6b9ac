"""The daily loan book (core/loan_daily_status), computed set-wise: every day of a run's range in one Spark plan.

A run starts from the book of the business day before its range and computes each loan's row for each day of the
range at once:
- balances are running totals per loan over the range's days (window sums of the day's drops' events), added to
  the previous day's balances;
- days past due come from the installments due by the day under the schedule version in force on the day, each
  against what was paid toward it by the day; the oldest installment not fully paid sets them;
- ``ever_30_plus`` and ``ever_60_plus`` are running ORs over the range, started from the previous day's flags;
- a loan leaves the book after its final row: the day it is paid off, cancelled or charged off. Its final row is
  kept in ``core/closed_loans`` for reporting (a cohort never shrinks), and a payment, refund or charge-off for it
  afterwards fails the step naming the loan (its balances are final; the old book let such an event turn the
  balances negative).

So a run's cost is its open loans' rows and the schedules and payments read once, not once per day: a 23-day
backfill chunk is one plan, where a day-by-day loop re-aggregated the history for every day (docs/benchmarks.md,
"Loan book: set-wise against day by day": faster for ranges, still slower for one day). The rules of a day are the
same whether the day is computed alone or inside a range (tests/test_loan_book_transforms.py proves a range equals
its days chained); benchmarks/loan_book.py checks the book equals the earlier day-by-day one up to final rows.
"""

from collections.abc import Sequence
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from assets.lending.contract import MONEY_SQL
from assets.lending.tables import OPEN_STATUSES, PARTITION
from batch_platform.audit import Audit, rows_satisfy, unique
from batch_platform.datasets import Step

LOAN_ATTRIBUTES = [
    "loan_id",
    "origination_date",
    "vintage_month",
    "term_months",
    "risk_band",
    "merchant_id",
    "merchant_category",
]
TO_DATE = ["principal_originated", "principal_repaid", "principal_refunded", "principal_charged_off", "interest_paid"]
# Each event table's per-day increment of a to-date balance: (input, amount column, balance column).
_INCREMENTS = {
    "payments": [("principal", "principal_repaid"), ("interest", "interest_paid")],
    "refunds": [("amount", "principal_refunded")],
    "charge_offs": [("principal", "principal_charged_off")],
}
OUTPUT_COLUMNS = [
    *LOAN_ATTRIBUTES,
    *TO_DATE,
    "ever_30_plus",
    "ever_60_plus",
    "outstanding_principal",
    "days_past_due",
    "status",
    "accrued_interest",
    "dpd_bucket",
    PARTITION,
]


def zero_money() -> Column:
    return F.lit(0).cast(MONEY_SQL)


def money_sum(column: str) -> Column:
    return F.sum(column).cast(MONEY_SQL)


def dpd_bucket() -> Column:
    # A function, not a constant: Spark columns can only be built once a session exists.
    return (
        F.when(F.col("days_past_due") <= 0, "current")
        .when(F.col("days_past_due") < 30, "1-29")
        .when(F.col("days_past_due") < 60, "30-59")
        .when(F.col("days_past_due") < 90, "60-89")
        .when(F.col("days_past_due") < 120, "90-119")
        .otherwise("120+")
    )


def days_frame(session: SparkSession, keys: Sequence[str]) -> DataFrame:
    """The partition keys' business dates, one row each, as a DataFrame (to join or broadcast)."""
    return session.createDataFrame([(date.fromisoformat(k),) for k in sorted(keys)], f"{PARTITION} date")


def _loans(previous_book: DataFrame, new_loans: DataFrame, first_day: date) -> DataFrame:
    """One row per loan that may be in the book during the range: the previous day's open loans from the first day,
    each new loan from the day its drop landed (``_from``); with the balances and flags it carries into the range."""
    carried = previous_book.where(F.col("status").isin(*OPEN_STATUSES)).select(
        *LOAN_ATTRIBUTES, *TO_DATE, "ever_30_plus", "ever_60_plus", F.lit(first_day).alias("_from")
    )
    new = new_loans.select(
        *LOAN_ATTRIBUTES,
        F.col("principal").cast(MONEY_SQL).alias("principal_originated"),
        *[zero_money().alias(c) for c in TO_DATE[1:]],
        F.lit(False).alias("ever_30_plus"),
        F.lit(False).alias("ever_60_plus"),
        F.col(PARTITION).alias("_from"),
    )
    return carried.unionByName(new)


def _by_day(rows: DataFrame, column: str, values: Sequence[str]) -> DataFrame:
    """Per loan, one row: a map from day to the struct of ``values`` of that day, in ``column``."""
    return rows.groupBy("loan_id").agg(
        F.map_from_entries(F.collect_list(F.struct(PARTITION, F.struct(*values)))).alias(column)
    )


def _daily_increments(events: dict[str, DataFrame], days: DataFrame) -> DataFrame:
    """Per loan and day of the range: what that day's drop adds to each to-date balance."""
    parts = []
    for name, columns in _INCREMENTS.items():
        amounts = {balance: F.col(amount) for amount, balance in columns}
        parts.append(
            events[name]
            .join(F.broadcast(days), PARTITION, "left_semi")
            .select(
                "loan_id",
                PARTITION,
                *[amounts.get(balance, zero_money()).cast(MONEY_SQL).alias(balance) for balance in TO_DATE[1:]],
            )
        )
    increments = parts[0]
    for part in parts[1:]:
        increments = increments.unionByName(part)
    return increments.groupBy("loan_id", PARTITION).agg(*[money_sum(c).alias(c) for c in TO_DATE[1:]])


def _delinquency(book_days: DataFrame, payments: DataFrame, schedule: DataFrame) -> DataFrame:
    """Per loan and day: the due date of the oldest installment not fully paid (null if none) and the interest
    of every installment due, under the schedule version in force on the day.

    A schedule row counts from its effective date, once its drop has landed; a payment toward an installment from
    its payment date, once its drop has landed (so a later drop's correction never changes an earlier day)."""
    schedule = schedule.select(
        "loan_id",
        "schedule_version",
        "installment_number",
        "due_date",
        "installment",
        "interest",
        F.greatest("effective_date", PARTITION).alias("_counts_from"),
    )
    # A version is in force from the day its first row counts until a higher version's does.
    versions = schedule.groupBy("loan_id", "schedule_version").agg(F.min("_counts_from").alias("_counts_from"))
    in_force = (
        book_days.join(versions, "loan_id")
        .where(F.col("_counts_from") <= F.col(PARTITION))
        .groupBy("loan_id", PARTITION)
        .agg(F.max("schedule_version").alias("schedule_version"))
    )
    due = (
        in_force.join(schedule, ["loan_id", "schedule_version"])
        .where((F.col("_counts_from") <= F.col(PARTITION)) & (F.col("due_date") <= F.col(PARTITION)))
        .select("loan_id", PARTITION, "installment_number", "due_date", "installment", "interest")
    )
    paid = payments.groupBy(
        F.col("loan_id").alias("_loan_id"),
        F.col("installment_number").alias("_installment_number"),
        F.greatest("payment_date", PARTITION).alias("_counts_from"),
    ).agg(money_sum("amount").alias("_paid"))
    paid_by_day = due.join(
        paid,
        (F.col("loan_id") == F.col("_loan_id"))
        & (F.col("installment_number") == F.col("_installment_number"))
        & (F.col("_counts_from") <= F.col(PARTITION)),
        "left",
    ).groupBy("loan_id", PARTITION, "installment_number", "due_date", "installment", "interest")
    return (
        paid_by_day.agg(money_sum("_paid").alias("paid"))
        .withColumn("_short", F.col("installment") > F.coalesce("paid", zero_money()))
        .groupBy("loan_id", PARTITION)
        .agg(
            F.min(F.when(F.col("_short"), F.col("due_date"))).alias("oldest_unpaid_due_date"),
            money_sum("interest").alias("interest_due"),
        )
    )


def _refuse(condition: Column, what: str) -> Column:
    """A filter that keeps every row, and fails the step with ``what`` (naming the loan and day) on a row where
    ``condition`` holds: evaluated inside the plan, so checking costs no extra pass over the book."""
    message = F.concat(
        F.lit("core/loan_daily_status: loan "),
        F.col("loan_id").cast("string"),
        F.lit(" on "),
        F.col(PARTITION).cast("string"),
        F.lit(f": {what}"),
    )
    return F.when(condition, F.raise_error(message)).isNull()


_CLOSED_LOAN_EVENT = (
    "a payment, refund or charge-off for a loan that is not open (it closed earlier, or was never originated): a "
    "closed loan's balances are final. Correct the drop and restate the day, or record the money as a recovery."
)


def _status() -> Column:
    return (
        F.when(F.col("principal_charged_off") > 0, "charged_off")
        .when(F.col("principal_refunded") >= F.col("principal_originated"), "cancelled")
        .when(F.col("outstanding_principal") <= 0, "paid_off")
        .when(F.col("days_past_due") > 0, "delinquent")
        .otherwise("current")
    )


def loan_daily_status_frame(
    step: Step,
    new_loans: DataFrame,
    payments: DataFrame,
    refunds: DataFrame,
    charge_offs: DataFrame,
    schedule: DataFrame,
    previous_book: DataFrame,
) -> DataFrame:
    """Per loan per business day: balances, days past due, DPD bucket and status, for every day of the step at once
    (``previous_book`` is the book of the business day before the step's first).

    The plan shuffles the book once, one row per loan: each loan's increments and days-past-due inputs are gathered
    into a map by day and joined on the loan alone, then the loan's rows for the range's days are made and the
    running totals taken over them where they already are (joining loan-days on loan and day would shuffle the
    loan-days again for each join)."""
    keys = sorted(step.partition_keys)
    days = days_frame(step.session, keys)
    payments = payments.where(~F.col("reversed"))
    loans = _loans(previous_book, new_loans, date.fromisoformat(keys[0]))
    events = {"payments": payments, "refunds": refunds, "charge_offs": charge_offs}
    increments = _by_day(_daily_increments(events, days), "_increments", TO_DATE[1:])
    loan_days = loans.select("loan_id", "_from").join(F.broadcast(days), F.col(PARTITION) >= F.col("_from"))
    delinquency = _by_day(
        _delinquency(loan_days.drop("_from"), payments, schedule),
        "_delinquency",
        ["oldest_unpaid_due_date", "interest_due"],
    )
    # An event for a loan not in the book (closed before the range) would vanish: such a loan fails the step.
    orphans = (
        increments.join(loans, "loan_id", "left_anti")
        .select("loan_id", F.explode(F.map_keys("_increments")).alias(PARTITION))
        .where(_refuse(F.lit(True), _CLOSED_LOAN_EVENT))
    )
    book = (
        loans.join(increments, "loan_id", "left")
        .join(delinquency, "loan_id", "left")
        .join(F.broadcast(days), F.col(PARTITION) >= F.col("_from"))
    )
    on_day = {
        "increment": F.element_at("_increments", F.col(PARTITION)),
        "delinquency": F.element_at("_delinquency", F.col(PARTITION)),
    }
    to_day = Window.partitionBy("loan_id").orderBy(PARTITION)
    up_to_day, before_day = (
        to_day.rowsBetween(Window.unboundedPreceding, 0),
        to_day.rowsBetween(Window.unboundedPreceding, -1),
    )
    book = book.select(
        *LOAN_ATTRIBUTES,
        PARTITION,
        "principal_originated",
        *[
            (F.col(c) + F.sum(F.coalesce(on_day["increment"][c], zero_money())).over(up_to_day))
            .cast(MONEY_SQL)
            .alias(c)
            for c in TO_DATE[1:]
        ],
        "ever_30_plus",
        "ever_60_plus",
        on_day["increment"].isNotNull().alias("_event"),
        on_day["delinquency"]["oldest_unpaid_due_date"].alias("_oldest_unpaid"),
        on_day["delinquency"]["interest_due"].alias("_interest_due"),
    )
    closed = F.col("status").isin("paid_off", "cancelled")
    book = (
        book.withColumn(
            "outstanding_principal",
            (
                F.col("principal_originated")
                - F.col("principal_repaid")
                - F.col("principal_refunded")
                - F.col("principal_charged_off")
            ).cast(MONEY_SQL),
        )
        .withColumn(
            "days_past_due", F.coalesce(F.datediff(F.col(PARTITION), F.col("_oldest_unpaid")), F.lit(0)).cast("int")
        )
        .withColumn("status", _status())
        .withColumn("days_past_due", F.when(closed, F.lit(0)).otherwise(F.col("days_past_due")))
        .withColumn(
            "accrued_interest",
            F.when(closed | (F.col("status") == "charged_off"), zero_money())
            .otherwise(F.greatest(F.coalesce("_interest_due", zero_money()) - F.col("interest_paid"), zero_money()))
            .cast(MONEY_SQL),
        )
        .withColumn("dpd_bucket", dpd_bucket())
        # Running ORs over the range, from the carried flag: once 30+ (60+) days past due, always so.
        .withColumn("ever_30_plus", F.col("ever_30_plus") | F.max(F.col("days_past_due") >= 30).over(up_to_day))
        .withColumn("ever_60_plus", F.col("ever_60_plus") | F.max(F.col("days_past_due") >= 60).over(up_to_day))
        # A loan leaves the book after its first closed row; an event for it after that fails the step.
        .withColumn("_left", F.coalesce(F.max(~F.col("status").isin(*OPEN_STATUSES)).over(before_day), F.lit(False)))
        .where(_refuse(F.col("_left") & F.col("_event"), _CLOSED_LOAN_EVENT) & ~F.col("_left"))
    )
    book = book.select(*OUTPUT_COLUMNS)
    # The orphans' rows never get past their filter; the union only puts that filter into the plan.
    return book.unionByName(
        orphans.select(
            *[
                F.col(c) if c in orphans.columns else F.lit(None).cast(book.schema[c].dataType).alias(c)
                for c in OUTPUT_COLUMNS
            ]
        )
    )


def _status_reconciles() -> Audit:
    return rows_satisfy(
        "balances_reconcile",
        "outstanding = originated - repaid - refunded - charged off, and never negative",
        lambda: (
            (
                F.col("outstanding_principal")
                == F.col("principal_originated")
                - F.col("principal_repaid")
                - F.col("principal_refunded")
                - F.col("principal_charged_off")
            )
            & (F.col("outstanding_principal") >= 0)
        ),
    )


STATUS_AUDITS: list[Audit] = [unique(PARTITION, "loan_id"), _status_reconciles()]
