"""Core loan tables: raw landing rows cleaned, typed to money, PII tokenized, and the daily loan book.

Every core table is written through write-audit-publish: the partition lands on an audit branch, its audits run
there, and main only sees it once every blocking audit passes.
"""

from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

import dagster as dg
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from assets.lending.contract import MAX_APR_BPS, MONEY_SQL, previous_business_day
from assets.lending.loan_book import STATUS_AUDITS, loan_daily_status_frame, money_sum, refusal, zero_money
from assets.lending.tables import (
    BACKFILL,
    CORE_APPLICATIONS,
    CORE_CHARGE_OFFS,
    CORE_CLOSED_LOANS,
    CORE_CUSTOMERS,
    CORE_LEDGER_ENTRIES,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_MERCHANTS,
    CORE_PAYMENTS,
    CORE_RECOVERIES,
    CORE_REFUNDS,
    CORE_REPAYMENT_SCHEDULE,
    DAY_CHAIN_BACKFILL,
    DAYS_PER_WRITE,
    LENDING_PARTITIONS,
    OPEN_STATUSES,
    PARTITION,
    RAW_TABLES,
)
from batch_platform.audit import Audit, AuditOutcome, not_null, references, rows_satisfy, unique
from batch_platform.datasets import LakeDataset, Step, lake_dataset_asset
from batch_platform.inputs import LakeInput, last, previous, up_to_this_partition
from batch_platform.lake import LakeTable
from batch_platform.pii import PiiTokenizer

MONEY = MONEY_SQL


def cents_to_money(column: str) -> Column:
    """Integer cents to decimal(18, 2), exactly (no floating point on the way)."""
    return (F.col(column).cast("decimal(18,0)") / F.lit(100)).cast(MONEY)


REFERENCES_A_LOAN = "references_a_loan"


# -- raw -> core tables, one raw dataset each -----------------------------------------------------------------


def core_dataset(
    table: LakeTable,
    transform: Callable[..., DataFrame],
    inputs: Sequence[LakeInput],
    audits: Sequence[Audit],
    **declaration: Any,
) -> LakeDataset:
    """A core table of the lending calendar, written through write-audit-publish, a month of days per backfill run
    unless the declaration says otherwise (a day chain)."""
    declaration.setdefault("backfill_policy", BACKFILL)
    return LakeDataset(
        table,
        transform,
        inputs=inputs,
        audits=audits,
        partitions_def=LENDING_PARTITIONS,
        **declaration,
    )


def raw(dataset: str) -> LakeInput:
    """The day's raw rows of a landing dataset, as input ``rows``."""
    return LakeInput(RAW_TABLES[dataset], name="rows")


def loans_to_date() -> LakeInput:
    """Every loan originated up to the day: what an event's loan reference may point to."""
    return LakeInput(CORE_LOANS, up_to_this_partition(), name="loans")


def merchants_frame(rows: DataFrame) -> DataFrame:
    return rows


def applications_frame(rows: DataFrame) -> DataFrame:
    return rows.withColumn("requested_amount", cents_to_money("requested_amount_cents"))


def repayment_schedule_frame(rows: DataFrame) -> DataFrame:
    for name in ("installment", "principal", "interest", "balance_after"):
        rows = rows.withColumn(name, cents_to_money(f"{name}_cents"))
    return rows


def payments_frame(rows: DataFrame) -> DataFrame:
    for name in ("amount", "principal", "interest"):
        rows = rows.withColumn(name, cents_to_money(f"{name}_cents"))
    return rows


def amount_frame(rows: DataFrame) -> DataFrame:
    return rows.withColumn("amount", cents_to_money("amount_cents"))


def charge_offs_frame(rows: DataFrame) -> DataFrame:
    return rows.withColumn("principal", cents_to_money("principal_cents")).withColumn(
        "interest", cents_to_money("interest_cents")
    )


def _schedule_amortizes() -> Audit:
    def evaluate(df: DataFrame) -> AuditOutcome:
        last = df.groupBy("loan_id", "schedule_version").agg(
            F.max_by("balance_after", "installment_number").alias("final_balance"),
            F.count("*").alias("installments"),
        )
        return AuditOutcome.from_failures(last.where(F.col("final_balance") != 0))

    return Audit("schedule_amortizes", "each schedule's last installment leaves a zero balance", evaluate)


MERCHANTS = core_dataset(
    CORE_MERCHANTS, merchants_frame, [raw("merchants")], [unique("merchant_id"), not_null("category", "region")]
)
APPLICATIONS = core_dataset(
    CORE_APPLICATIONS,
    applications_frame,
    [raw("applications")],
    [
        unique("application_id"),
        rows_satisfy(
            "requested_amount_positive", "requested amounts are positive", lambda: F.col("requested_amount") > 0
        ),
        rows_satisfy(
            "offered_apr_in_bounds",
            "offered APR is within 0-36% when offered",
            lambda: F.col("offered_apr_bps").isNull() | F.col("offered_apr_bps").between(0, MAX_APR_BPS),
        ),
    ],
)
REPAYMENT_SCHEDULE = core_dataset(
    CORE_REPAYMENT_SCHEDULE,
    repayment_schedule_frame,
    [raw("repayment_schedule")],
    [
        unique("loan_id", "schedule_version", "installment_number"),
        rows_satisfy(
            "installment_splits_into_principal_and_interest",
            "installment = principal + interest, all non-negative",
            lambda: (
                (F.col("installment") == F.col("principal") + F.col("interest"))
                & (F.col("principal") >= 0)
                & (F.col("interest") >= 0)
            ),
        ),
        _schedule_amortizes(),
    ],
)


def customers_frame(rows: DataFrame, step: Step) -> DataFrame:
    """Customers with every identifying field replaced by a keyed HMAC token; raw.customers keeps the clear PII."""
    pii: PiiTokenizer = step.resources.pii
    return rows.select(
        PARTITION,
        "customer_id",
        "created_date",
        pii.tokenize_spark(F.concat_ws(" ", "first_name", "last_name")).alias("name_token"),
        pii.tokenize_spark(F.col("email")).alias("email_token"),
        pii.tokenize_spark(F.col("phone")).alias("phone_token"),
        pii.tokenize_spark(F.col("national_id")).alias("national_id_token"),
        pii.tokenize_spark(F.concat_ws("|", "street_address", "city", "state", "postal_code")).alias("address_token"),
        F.year("date_of_birth").cast("int").alias("birth_year"),
        "state",
        F.substring("postal_code", 1, 3).alias("postal_prefix"),
    )


CUSTOMERS = core_dataset(
    CORE_CUSTOMERS, customers_frame, [raw("customers")], [unique("customer_id")], resources=["pii"]
)


def loans_frame(rows: DataFrame, merchants: DataFrame) -> DataFrame:
    """Originated loans in money, with their vintage month and their merchant's category as of the loan's day.

    ``merchants`` is core/merchants up to the step's last day, one row per merchant and drop day (audited unique):
    a loan takes the latest version announced on or before its own day, whatever was announced after, so the result
    is the same whichever days a run covers. A merchant announced only later leaves the category empty.
    """
    versions = merchants.select(
        F.col("merchant_id").alias("_merchant_id"),
        F.col(PARTITION).alias("_announced"),
        F.col("category").alias("merchant_category"),
    )
    known_by_then = (F.col("merchant_id") == F.col("_merchant_id")) & (F.col("_announced") <= F.col(PARTITION))
    latest_first = Window.partitionBy("loan_id").orderBy(F.col("_announced").desc_nulls_last())
    return (
        rows.join(versions, known_by_then, "left")
        .withColumn("_version", F.row_number().over(latest_first))
        .where(F.col("_version") == 1)
        .withColumn("vintage_month", F.trunc("origination_date", "month"))
        .withColumn("principal", cents_to_money("principal_cents"))
        .withColumn("installment", cents_to_money("installment_cents"))
        .withColumn("total_interest", cents_to_money("total_interest_cents"))
    )


LOAN_AUDITS: list[Audit] = [
    unique("loan_id"),
    rows_satisfy("principal_positive", "loans have a positive principal", lambda: F.col("principal") > 0),
    rows_satisfy("apr_in_bounds", "APR is within 0-36%", lambda: F.col("apr_bps").between(0, MAX_APR_BPS)),
    rows_satisfy("term_is_offered", "term is 3, 6, 12 or 24 months", lambda: F.col("term_months").isin(3, 6, 12, 24)),
]

LOANS = core_dataset(
    CORE_LOANS,
    loans_frame,
    # The merchant dimension is versioned by drop day: a loan takes its merchant as of its own day.
    [raw("loans"), LakeInput(CORE_MERCHANTS, up_to_this_partition(), name="merchants")],
    LOAN_AUDITS,
)


def loan_event_dataset(
    table: LakeTable,
    raw_dataset: str,
    transform: Callable[[DataFrame], DataFrame],
    key: Sequence[str],
    amount_rule: tuple[str, str, Callable[[], Column]],
) -> LakeDataset:
    """A core table of loan events: unique key, an amount rule, and every row references a loan known by its day."""
    audits = [
        unique(*key),
        rows_satisfy(*amount_rule),
        references("loan_id", "loans", name=REFERENCES_A_LOAN),
    ]
    return core_dataset(table, transform, [raw(raw_dataset), loans_to_date()], audits)


PAYMENTS = loan_event_dataset(
    CORE_PAYMENTS,
    "payments",
    payments_frame,
    ["payment_id"],
    (
        "amount_splits_into_principal_and_interest",
        "amount = principal + interest, all non-negative",
        lambda: (
            (F.col("amount") == F.col("principal") + F.col("interest"))
            & (F.col("principal") >= 0)
            & (F.col("interest") >= 0)
        ),
    ),
)
REFUNDS = loan_event_dataset(
    CORE_REFUNDS,
    "refunds",
    amount_frame,
    ["refund_id"],
    ("amount_positive", "refunds are positive", lambda: F.col("amount") > 0),
)
CHARGE_OFFS = loan_event_dataset(
    CORE_CHARGE_OFFS,
    "charge_offs",
    charge_offs_frame,
    ["loan_id"],
    ("charged_off_at_120_dpd", "charge-off at 120+ days past due", lambda: F.col("days_past_due") >= 120),
)
RECOVERIES = loan_event_dataset(
    CORE_RECOVERIES,
    "recoveries",
    amount_frame,
    ["recovery_id"],
    ("amount_positive", "recoveries are positive", lambda: F.col("amount") > 0),
)


# -- the daily loan book (computed in loan_book.py) ------------------------------------------------------------

# The day's inputs of the loan book, as one parent that materializes only after all of them.
#
# Why: Dagster's asset backfill daemon (1.13.27, _should_backfill_atomic_asset_subset_unit) checks a partition
# range of a self-dependent asset against its parents one parent at a time, in sorted key order, and checks the
# self-dependency only once. When a restatement backfill targets day D of the book's inputs and days D.. of the
# book, and a tick sees some of day D's inputs published but not yet the ones sorting after "core/loan_daily_status"
# (loans, payments, refunds, repayment_schedule), the self-dependency check passes while D is still in the range,
# then a later parent removes D, and the daemon launches a book run for D+1.. that reads the old book of day D (the
# restated day's book is rebuilt in a later run). This barrier depends on all of those inputs, so it is published
# last, and its key sorts before the book's own key: it removes D before the self-dependency is checked, and the
# check then holds D+1.. back until D's book is materialized. tests/test_backfill_ordering.py drives the daemon's
# logic through that tick.
LOAN_BOOK_INPUTS = dg.AssetKey(["core", "loan_book_inputs"])
_BOOK_DAY_INPUTS = [
    CORE_LOANS.asset_key,
    CORE_PAYMENTS.asset_key,
    CORE_REFUNDS.asset_key,
    CORE_CHARGE_OFFS.asset_key,
    CORE_REPAYMENT_SCHEDULE.asset_key,
]


@dg.asset(
    key=LOAN_BOOK_INPUTS,
    partitions_def=LENDING_PARTITIONS,
    deps=_BOOK_DAY_INPUTS,
    group_name="core",
    backfill_policy=BACKFILL,
    description="A barrier, no table: every input of the loan book for the day is published.",
)
def loan_book_inputs() -> dg.MaterializeResult:
    return dg.MaterializeResult()


LOAN_DAILY_STATUS = core_dataset(
    CORE_LOAN_DAILY_STATUS,
    loan_daily_status_frame,
    [
        # The days' drops only: the previous day's book carries each open loan's installments and what was paid.
        LakeInput(CORE_LOANS, name="new_loans"),
        LakeInput(CORE_PAYMENTS, name="payments"),
        LakeInput(CORE_REFUNDS, name="refunds"),
        LakeInput(CORE_CHARGE_OFFS, name="charge_offs"),
        LakeInput(CORE_REPAYMENT_SCHEDULE, name="schedule"),
        # Day-chained: balances and installments carry from the previous business day's book, which must exist.
        LakeInput(CORE_LOAN_DAILY_STATUS, previous(1), name="previous_book", required=True),
    ],
    STATUS_AUDITS,
    ordering_deps=[dg.AssetDep(LOAN_BOOK_INPUTS)],  # see LOAN_BOOK_INPUTS
    compute="medium",
    backfill_policy=DAY_CHAIN_BACKFILL,
    max_partitions_per_write=DAYS_PER_WRITE,
)


def closed_loans_frame(book: DataFrame) -> DataFrame:
    """The day's closed rows of the book: each is a loan's final row (the book drops it the next day)."""
    return book.where(~F.col("status").isin(*OPEN_STATUSES))


CLOSED_LOANS = core_dataset(
    CORE_CLOSED_LOANS,
    closed_loans_frame,
    [LakeInput(CORE_LOAN_DAILY_STATUS, name="book")],
    [unique(PARTITION, "loan_id")],
)


# -- the general ledger -----------------------------------------------------------------------------------------


def _posting(
    entries: DataFrame, event_type: str, entry_id: Column, event_date: str, lines: Sequence[tuple[str, str, Column]]
) -> DataFrame:
    """One journal entry per row of ``entries``: a line per (account, side, amount)."""
    parts = [
        entries.select(
            PARTITION,
            entry_id.alias("entry_id"),
            F.lit(event_type).alias("event_type"),
            F.col(event_date).alias("event_date"),
            "loan_id",
            F.lit(account).alias("account"),
            (amount if side == "debit" else zero_money()).cast(MONEY).alias("debit"),
            (amount if side == "credit" else zero_money()).cast(MONEY).alias("credit"),
        )
        for account, side, amount in lines
    ]
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result.where((F.col("debit") != 0) | (F.col("credit") != 0))


def _entries_balance() -> Audit:
    def evaluate(df: DataFrame) -> AuditOutcome:
        totals = df.groupBy(PARTITION, "entry_id").agg(
            money_sum("debit").alias("debits"), money_sum("credit").alias("credits")
        )
        return AuditOutcome.from_failures(totals.where(F.col("debits") != F.col("credits")))

    return Audit("entries_balance", "every journal entry's debits equal its credits", evaluate)


def _day_balances() -> Audit:
    def evaluate(df: DataFrame) -> AuditOutcome:
        totals = df.groupBy(PARTITION).agg(money_sum("debit").alias("debits"), money_sum("credit").alias("credits"))
        rows = totals.collect()
        outcome = AuditOutcome.from_failures(totals.where(F.col("debits") != F.col("credits")))
        return AuditOutcome(
            outcome.failing_rows,
            outcome.sample,
            {
                "debits": str(sum((r["debits"] for r in rows), start=0)),
                "credits": str(sum((r["credits"] for r in rows), start=0)),
            },
        )

    return Audit("ledger_balances", "debits equal credits per business day, to the cent", evaluate)


LEDGER_AUDITS: list[Audit] = [_entries_balance(), _day_balances()]


def ledger_entries_frame(
    step: Step,
    loans: DataFrame,
    payments: DataFrame,
    refunds: DataFrame,
    charge_offs: DataFrame,
    recoveries: DataFrame,
    books: DataFrame,
) -> DataFrame:
    """The double-entry journal of the day's drop: originations, interest accrual, payments, refunds, charge-offs
    and recoveries. Reversed payments post nothing. ``books``: the loan book of each day and of the day before it."""
    payments = payments.where(~F.col("reversed"))
    days = [date.fromisoformat(k) for k in step.partition_keys]
    book = books.where(F.col(PARTITION).isin(days))
    accruals = interest_accruals(step.session, step.partition_keys, book, books)
    journal = [
        _posting(
            loans,
            "origination",
            F.concat(F.lit("orig-"), F.col("loan_id").cast("string")),
            "origination_date",
            [("loans_receivable", "debit", F.col("principal")), ("merchant_payable", "credit", F.col("principal"))],
        ),
        _posting(
            accruals,
            "interest_accrual",
            F.concat_ws(
                "-", F.lit("accr"), F.col("loan_id").cast("string"), F.col("installment_number").cast("string")
            ),
            "due_date",
            [("interest_receivable", "debit", F.col("interest")), ("interest_income", "credit", F.col("interest"))],
        ),
        _posting(
            payments,
            "payment",
            F.concat(F.lit("pay-"), F.col("payment_id").cast("string")),
            "payment_date",
            [
                ("cash", "debit", F.col("amount")),
                ("loans_receivable", "credit", F.col("principal")),
                ("interest_receivable", "credit", F.col("interest")),
            ],
        ),
        _posting(
            refunds,
            "refund",
            F.concat(F.lit("ref-"), F.col("refund_id").cast("string")),
            "refund_date",
            [("merchant_payable", "debit", F.col("amount")), ("loans_receivable", "credit", F.col("amount"))],
        ),
        _posting(
            charge_offs,
            "charge_off",
            F.concat(F.lit("co-"), F.col("loan_id").cast("string")),
            "charge_off_date",
            [
                ("credit_losses", "debit", F.col("principal") + F.col("interest")),
                ("loans_receivable", "credit", F.col("principal")),
                ("interest_receivable", "credit", F.col("interest")),
            ],
        ),
        _posting(
            recoveries,
            "recovery",
            F.concat(F.lit("rec-"), F.col("recovery_id").cast("string")),
            "recovery_date",
            [("cash", "debit", F.col("amount")), ("recovery_income", "credit", F.col("amount"))],
        ),
    ]
    entries = journal[0]
    for part in journal[1:]:
        entries = entries.unionByName(part)
    return entries


LEDGER_ENTRIES = core_dataset(
    CORE_LEDGER_ENTRIES,
    ledger_entries_frame,
    [
        LakeInput(CORE_LOANS, name="loans"),
        LakeInput(CORE_PAYMENTS, name="payments"),
        LakeInput(CORE_REFUNDS, name="refunds"),
        LakeInput(CORE_CHARGE_OFFS, name="charge_offs"),
        LakeInput(CORE_RECOVERIES, name="recoveries"),
        # The day's book (its loans' installments under the schedule version in force), and the day before's:
        # whether a loan was open when the day began (one paid off during the day still accrues the day's interest).
        LakeInput(CORE_LOAN_DAILY_STATUS, last(2), name="books"),
    ],
    LEDGER_AUDITS,
)


def interest_accruals(
    session: SparkSession, keys: Sequence[str], book: DataFrame, previous_book: DataFrame
) -> DataFrame:
    """Scheduled interest falling due within each drop's window, for loans open when the window began: the
    installments the day's book carries (the schedule version in force on the day), so the ledger, like the book,
    reads no schedule history.

    Open when it began: open in the day's book (``book``), or paid off during the day after being open in the
    previous business day's book (found in ``previous_book`` by its date) or originated in the window. A last
    installment paid on its due date accrues its interest, which its payment then settles; a loan charged off during
    the day does not accrue (the charge-off writes its interest off).
    """
    windows = session.createDataFrame(
        [
            (
                date.fromisoformat(k),
                previous_business_day(date.fromisoformat(k)) + timedelta(days=1),
                previous_business_day(date.fromisoformat(k)),
            )
            for k in keys
        ],
        f"{PARTITION} date, window_start date, previous_day date",
    )
    before = previous_book.select(
        F.col(PARTITION).alias("previous_day"), "loan_id", F.col("status").alias("previous_status")
    )
    was_open = F.col("previous_status").isNull() | F.col("previous_status").isin(*OPEN_STATUSES)
    open_loans = (
        book.join(F.broadcast(windows), PARTITION)
        .join(before, ["previous_day", "loan_id"], "left")
        .where(F.col("status").isin(*OPEN_STATUSES) | ((F.col("status") == "paid_off") & was_open))
    )
    no_state = "the day's book has no installments for this loan: it was written before the book carried them"
    # The refusal is inside the exploded value: a filter of its own would run after the one Spark infers from the
    # explode (installments not null), and never see the rows it is for.
    installments = F.coalesce("installments", refusal(no_state, "core/ledger_entries"))
    return (
        open_loans.select(PARTITION, "loan_id", "window_start", F.explode(installments).alias("_installment"))
        .where(F.col("_installment.due_date").between(F.col("window_start"), F.col(PARTITION)))
        .select(
            PARTITION, "loan_id", "_installment.installment_number", "_installment.due_date", "_installment.interest"
        )
    )


CORE_DATASETS: list[LakeDataset] = [
    MERCHANTS,
    APPLICATIONS,
    REPAYMENT_SCHEDULE,
    CUSTOMERS,
    LOANS,
    PAYMENTS,
    REFUNDS,
    CHARGE_OFFS,
    RECOVERIES,
    LOAN_DAILY_STATUS,
    CLOSED_LOANS,
    LEDGER_ENTRIES,
]
core_assets: list[dg.AssetsDefinition] = [
    *(lake_dataset_asset(dataset) for dataset in CORE_DATASETS),
    loan_book_inputs,
]
