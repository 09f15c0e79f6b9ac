"""The daily loan book (core/loan_daily_status), computed set-wise: every day of a run's range in one Spark plan.

A run starts from the book of the business day before its range and reads nothing older than its range's drops:
each open loan's row carries what its next day needs (balances, flags, the schedule version in force and each of its
installments with what was paid toward it). For each day of the range at once:
- balances are running totals per loan over the range's days (window sums of the day's drops' events), added to
  the previous day's balances;
- installments are the carried ones with the range's schedule rows and payments landed by the day (a higher version
  replaces the schedule, payments stay with their installment number); days past due come from the oldest
  installment due by the day and not fully paid;
- ``ever_30_plus`` and ``ever_60_plus`` are running ORs over the range, started from the previous day's flags;
- a loan leaves the book after its final row: the day it is paid off, cancelled or charged off. Its final row is
  kept in ``core/closed_loans`` for reporting (a cohort never shrinks), and a payment, refund or charge-off for it
  afterwards fails the step naming the loan (its balances are final; the old book let such an event turn the
  balances negative).

So a run's cost is its open loans' rows and its range's drops, whatever the history's length: a 23-day backfill
chunk is one plan, and a day no longer re-reads every payment and schedule since the lender's first day
(docs/benchmarks.md, "Loan book: this checkout against earlier revisions"). The rules of a day are the same whether
the day is computed alone or inside a range (tests/test_loan_book_transforms.py proves a range equals its days
chained); benchmarks/loan_book.py checks the book equals the earlier day-by-day and history-reading ones.
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
    "schedule_version",
    "installments",
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
    carried = (
        previous_book.where(F.col("status").isin(*OPEN_STATUSES))
        .where(refuse(F.col("installments").isNull(), _NO_CARRIED_STATE))
        .select(
            *LOAN_ATTRIBUTES,
            *TO_DATE,
            "ever_30_plus",
            "ever_60_plus",
            "schedule_version",
            "installments",
            F.lit(first_day).alias("_from"),
        )
    )
    new = new_loans.select(
        *LOAN_ATTRIBUTES,
        F.col("principal").cast(MONEY_SQL).alias("principal_originated"),
        *[zero_money().alias(c) for c in TO_DATE[1:]],
        F.lit(False).alias("ever_30_plus"),
        F.lit(False).alias("ever_60_plus"),
        F.lit(None).cast("int").alias("schedule_version"),
        F.lit(None).cast(INSTALLMENTS_SQL).alias("installments"),
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


INSTALLMENTS_SQL = (
    f"array<struct<installment_number:int,due_date:date,installment:{MONEY_SQL},interest:{MONEY_SQL},paid:{MONEY_SQL}>>"
)
_SCHEDULED = ["installment_number", "due_date", "installment", "interest"]


def _schedule_rows(schedule: DataFrame, days: DataFrame) -> DataFrame:
    """Per loan, one row: the range's repayment schedule rows, each with the day its drop landed (a row counts from
    that day: the raw load keeps effective dates within their drop's window, and a day's state is carried whole)."""
    return (
        schedule.join(F.broadcast(days), PARTITION, "left_semi")
        .where(refuse(F.col("effective_date") > F.col(PARTITION), _EFFECTIVE_AFTER_DROP))
        .groupBy("loan_id")
        .agg(F.collect_list(F.struct(PARTITION, "schedule_version", *_SCHEDULED)).alias("_schedule_rows"))
    )


def _payment_rows(payments: DataFrame, days: DataFrame) -> DataFrame:
    """Per loan, one row: what the range's drops paid toward each installment number, by day (a payment counts from
    its drop's day: the raw load keeps payment dates within their drop's window)."""
    return (
        payments.join(F.broadcast(days), PARTITION, "left_semi")
        .where(refuse(F.col("payment_date") > F.col(PARTITION), _EFFECTIVE_AFTER_DROP))
        .groupBy("loan_id", PARTITION, "installment_number")
        .agg(money_sum("amount").alias("amount"))
        .groupBy("loan_id")
        .agg(F.collect_list(F.struct(PARTITION, "installment_number", "amount")).alias("_payment_rows"))
    )


def _money_total(array: Column | str, field: str) -> Column:
    return F.aggregate(array, zero_money(), lambda total, e: (total + e[field]).cast(MONEY_SQL))


def _with_installments(book: DataFrame) -> DataFrame:
    """Each loan-day's schedule version in force and its installments with what was paid toward each, as of the day:
    the carried ones (``schedule_version``, ``installments``: the previous day's) with the range's schedule rows and
    payments that landed by the day. Also ``_oldest_unpaid`` (the due date of the oldest installment due and not
    fully paid) and ``_interest_due`` (the interest of every installment due).

    A version is in force from the day its first row lands until a higher version's does; a row of the version in
    force that lands later replaces the carried installment of its number. Payments count toward an installment
    number whatever the version (a reschedule keeps what was paid).

    Spark evaluates these array functions row by row without generated code, so the cost is in how many lambda
    calls a row makes: a loan-day with no schedule row and no payment by the day (most of them) keeps the carried
    installments as they are, one with payments toward carried installments only adds them, one whose schedule has
    every number paid toward (a new loan) takes it with what was paid, and only the others are merged by number.
    Each step is its own column so that Spark evaluates it once per row (a collapsed projection would repeat it in
    every use)."""
    day = F.col(PARTITION)
    carried_version = F.coalesce(F.col("schedule_version"), F.lit(-1))
    book = (
        # In the order they landed (collect_list's order is the shuffle's): a later row of a number wins.
        book.withColumn(
            "_rows",
            F.array_sort(F.filter(F.coalesce("_schedule_rows", F.array()), lambda r: r[PARTITION] <= day)),
        )
        .withColumn("_paid", F.filter(F.coalesce("_payment_rows", F.array()), lambda p: p[PARTITION] <= day))
        .withColumn("_carried", F.coalesce("installments", F.array()))
        .withColumn("_changed", (F.size("_rows") > 0) | (F.size("_paid") > 0))
        # Only payments, toward installments the loan carries (most loan-days after a payment in a range).
        .withColumn(
            "_paid_only",
            (F.size("_rows") == 0)
            & F.forall(
                "_paid", lambda p: F.exists("_carried", lambda e: e["installment_number"] == p["installment_number"])
            ),
        )
        .withColumn(
            "_version", F.aggregate("_rows", carried_version, lambda v, r: F.greatest(v, r["schedule_version"]))
        )
    )
    latest = F.transform(
        F.filter("_rows", lambda r: r["schedule_version"] == F.col("_version")),
        lambda r: F.struct(*[r[c].alias(c) for c in _SCHEDULED]),
    )
    still_scheduled = F.filter(
        "_carried",
        lambda e: (
            (F.col("_version") == carried_version)
            & e["due_date"].isNotNull()
            & ~F.exists(latest, lambda r: r["installment_number"] == e["installment_number"])
        ),
    )
    book = book.withColumn(
        "_scheduled",
        F.when(
            F.col("_changed"),
            F.concat(F.transform(still_scheduled, lambda e: F.struct(*[e[c].alias(c) for c in _SCHEDULED])), latest),
        ),
    )
    numbers = F.array_sort(
        F.array_distinct(
            F.concat(
                F.transform("_carried", lambda e: e["installment_number"]),
                F.transform("_scheduled", lambda s: s["installment_number"]),
                F.transform("_paid", lambda p: p["installment_number"]),
            )
        )
    )

    def paid_in_range(number: Column) -> Column:
        return _money_total(F.filter("_paid", lambda p: p["installment_number"] == number), "amount")

    def paid_toward(number: Column) -> Column:
        """What was paid toward an installment number by the day: carried, and the range's payments."""
        carried = _money_total(F.filter("_carried", lambda e: e["installment_number"] == number), "paid")
        return (carried + paid_in_range(number)).cast(MONEY_SQL)

    merged = F.transform(
        numbers,
        lambda n: F.struct(
            n.alias("installment_number"),
            F.try_element_at(F.filter("_scheduled", lambda s: s["installment_number"] == n), F.lit(-1)).alias(
                "scheduled"
            ),
            paid_toward(n).alias("paid"),
        ),
    )
    paid_added = F.transform(
        "_carried",
        lambda e: F.struct(
            *[e[c].alias(c) for c in _SCHEDULED],
            (e["paid"] + paid_in_range(e["installment_number"])).cast(MONEY_SQL).alias("paid"),
        ),
    )

    def kept(installment: Column) -> Column:
        # An installment number neither in the version in force nor paid toward is not carried.
        return installment["due_date"].isNotNull() | (installment["paid"] != 0)

    def scheduled(number: Column) -> Column:
        return F.exists("_scheduled", lambda s: s["installment_number"] == number)

    # The schedule as of the day has every installment number anything was paid toward, each once (a new loan's
    # days, most rescheduled loans): its installments with what was paid, no merge by number.
    book = book.withColumn(
        "_covered",
        F.col("_changed")
        & ~F.col("_paid_only")
        & F.forall("_paid", lambda p: scheduled(p["installment_number"]))
        & F.forall("_carried", lambda e: (e["paid"] == 0) | scheduled(e["installment_number"]))
        & (
            F.size(F.array_distinct(F.transform("_scheduled", lambda s: s["installment_number"])))
            == F.size("_scheduled")
        ),
    )
    scheduled_paid = F.array_sort(
        F.transform(
            "_scheduled",
            lambda s: F.struct(
                *[s[c].alias(c) for c in _SCHEDULED],
                paid_toward(s["installment_number"]).alias("paid"),
            ),
        )
    )
    book = book.withColumn(
        "installments",
        F.when(~F.col("_changed"), F.col("_carried"))
        .when(F.col("_paid_only"), F.filter(paid_added, kept))
        .when(F.col("_covered"), scheduled_paid)
        .otherwise(
            F.transform(
                F.filter(merged, lambda i: i["scheduled"].isNotNull() | (i["paid"] != 0)),
                lambda i: F.struct(
                    i["installment_number"].alias("installment_number"),
                    i["scheduled"]["due_date"].alias("due_date"),
                    i["scheduled"]["installment"].alias("installment"),
                    i["scheduled"]["interest"].alias("interest"),
                    i["paid"].alias("paid"),
                ),
            )
        ),
    )
    due = F.filter("installments", lambda e: e["due_date"] <= day)
    return (
        book.withColumn("schedule_version", F.when(F.col("_version") >= 0, F.col("_version")))
        .withColumn(
            "_oldest_unpaid",
            F.array_min(F.transform(F.filter(due, lambda e: e["installment"] > e["paid"]), lambda e: e["due_date"])),
        )
        .withColumn("_interest_due", _money_total(due, "interest"))
    )


def refusal(what: str, dataset: str = "core/loan_daily_status") -> Column:
    """An expression that fails the step with ``what``, naming the dataset and the row's loan and day."""
    message = F.concat(
        F.lit(f"{dataset}: loan "),
        F.col("loan_id").cast("string"),
        F.lit(" on "),
        F.col(PARTITION).cast("string"),
        F.lit(f": {what}"),
    )
    return F.raise_error(message)


def refuse(condition: Column, what: str, dataset: str = "core/loan_daily_status") -> Column:
    """A filter that keeps every row, and fails the step with ``what`` (naming the dataset, loan and day) on a row
    where ``condition`` holds: evaluated inside the plan, so checking costs no extra pass over the rows."""
    return F.when(condition, refusal(what, dataset)).isNull()


_EFFECTIVE_AFTER_DROP = (
    "a schedule row effective, or a payment made, after the business day of its drop: core keeps only dates within "
    "their drop's window (the raw load quarantines others), so the input breaks its contract"
)
_NO_CARRIED_STATE = (
    "the previous day's book has no installments for this open loan: it was written before the book carried them. "
    "Rebuild core/loan_daily_status from its first business day (batch-platform backfill core/loan_daily_status)."
)
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
    (``previous_book`` is the book of the business day before the step's first; every other input holds the step's
    days only: what a day adds to the book is its own drop, whatever the history's length).

    The plan shuffles the book once, one row per loan: each loan's increments, schedule rows and payments are
    gathered into one row per loan and joined on the loan alone, then the loan's rows for the range's days are made
    and the running totals taken over them where they already are (joining loan-days on loan and day would shuffle
    the loan-days again for each join)."""
    keys = sorted(step.partition_keys)
    days = days_frame(step.session, keys)
    payments = payments.where(~F.col("reversed"))
    loans = _loans(previous_book, new_loans, date.fromisoformat(keys[0]))
    events = {"payments": payments, "refunds": refunds, "charge_offs": charge_offs}
    increments = _by_day(_daily_increments(events, days), "_increments", TO_DATE[1:])
    # An event for a loan not in the book (closed before the range) would vanish: such a loan fails the step.
    orphans = (
        increments.join(loans, "loan_id", "left_anti")
        .select("loan_id", F.explode(F.map_keys("_increments")).alias(PARTITION))
        .where(refuse(F.lit(True), _CLOSED_LOAN_EVENT))
    )
    book = (
        loans.join(increments, "loan_id", "left")
        .join(_schedule_rows(schedule, days), "loan_id", "left")
        .join(_payment_rows(payments, days), "loan_id", "left")
        .join(F.broadcast(days), F.col(PARTITION) >= F.col("_from"))
    )
    book = _with_installments(book)
    on_day = {"increment": F.element_at("_increments", F.col(PARTITION))}
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
        "_oldest_unpaid",
        "_interest_due",
        "schedule_version",
        "installments",
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
        .where(refuse(F.col("_left") & F.col("_event"), _CLOSED_LOAN_EVENT) & ~F.col("_left"))
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
