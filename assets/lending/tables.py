"""Iceberg tables of the loan domain: raw (landing as is), core (cleaned, PII tokenized), reporting.

Every table is partitioned by ``business_date``, the business day of the landing drop its rows came in (a Monday
drop also carries the weekend's events, the drop after a Federal Reserve holiday the holiday's), except the
reporting tables noted below. Money is decimal(18, 2) from core on; raw keeps the landing's integer cents as they
arrived.
"""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from assets.lending.contract import DATASETS, LENDING_CALENDAR, LENDING_START, MONEY, SCHEMAS
from batch_platform.lake import LakeTable

PARTITION = "business_date"


def _f(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


def _business_date() -> pa.Field:
    return _f(PARTITION, pa.date32(), nullable=False)


# -- raw --------------------------------------------------------------------------------------------------------

RAW_TABLES: dict[str, LakeTable] = {
    dataset: LakeTable(
        namespace="raw",
        name=dataset,
        partition_column=PARTITION,
        description=f"Landing dataset {dataset!r} as delivered, typed and checked against its drop's manifest.",
        schema=pa.schema([_business_date(), _f("drop_version", pa.int32(), False), *SCHEMAS[dataset]]),
    )
    for dataset in DATASETS
}

RAW_QUARANTINE = LakeTable(
    namespace="raw",
    name="quarantine",
    partition_column=PARTITION,
    description="Landing rows refused by parsing or validation, with the reason; kept for operators.",
    schema=pa.schema(
        [
            _business_date(),
            _f("drop_version", pa.int32(), False),
            _f("dataset", pa.string(), False),
            _f("row_number", pa.int64(), False),  # 0-based position in the landing file
            _f("reason", pa.string(), False),
            _f("record", pa.string(), False),  # the row's values as JSON (PII stays in raw)
        ]
    ),
)

# -- core -------------------------------------------------------------------------------------------------------

CORE_CUSTOMERS = LakeTable(
    namespace="core",
    name="customers",
    partition_column=PARTITION,
    description="Customers with PII replaced by keyed HMAC tokens; only raw.customers holds clear PII.",
    schema=pa.schema(
        [
            _business_date(),
            _f("customer_id", pa.int64(), False),
            _f("created_date", pa.date32(), False),
            _f("name_token", pa.string(), False),
            _f("email_token", pa.string(), False),
            _f("phone_token", pa.string(), False),
            _f("national_id_token", pa.string(), False),
            _f("address_token", pa.string(), False),
            _f("birth_year", pa.int32()),
            _f("state", pa.string()),
            _f("postal_prefix", pa.string()),  # first three digits only
        ]
    ),
)

CORE_MERCHANTS = LakeTable(
    namespace="core",
    name="merchants",
    partition_column=PARTITION,
    description="Merchants onboarded, by the drop that announced them.",
    schema=pa.schema(
        [
            _business_date(),
            _f("merchant_id", pa.int64(), False),
            _f("onboarded_date", pa.date32(), False),
            _f("merchant_name", pa.string(), False),
            _f("category", pa.string(), False),
            _f("region", pa.string(), False),
            _f("state", pa.string()),
            _f("city", pa.string()),
        ]
    ),
)

CORE_APPLICATIONS = LakeTable(
    namespace="core",
    name="applications",
    partition_column=PARTITION,
    description="Credit applications and their decisions.",
    schema=pa.schema(
        [
            _business_date(),
            _f("application_id", pa.int64(), False),
            _f("application_date", pa.date32(), False),
            _f("applied_at", pa.timestamp("us", tz="UTC")),
            _f("customer_id", pa.int64(), False),
            _f("merchant_id", pa.int64(), False),
            _f("requested_amount", MONEY, False),
            _f("term_months", pa.int32(), False),
            _f("credit_score", pa.int32()),
            _f("risk_band", pa.string(), False),
            _f("decision", pa.string(), False),
            _f("decline_reason", pa.string()),
            _f("offered_apr_bps", pa.int32()),
        ]
    ),
)

CORE_LOANS = LakeTable(
    namespace="core",
    name="loans",
    partition_column=PARTITION,
    description="Originated loans, with the attributes reporting groups by.",
    schema=pa.schema(
        [
            _business_date(),
            _f("loan_id", pa.int64(), False),
            _f("application_id", pa.int64(), False),
            _f("customer_id", pa.int64(), False),
            _f("merchant_id", pa.int64(), False),
            _f("merchant_category", pa.string()),
            _f("origination_date", pa.date32(), False),
            _f("vintage_month", pa.date32(), False),  # first day of the origination month
            _f("principal", MONEY, False),
            _f("term_months", pa.int32(), False),
            _f("apr_bps", pa.int32(), False),
            _f("is_zero_apr_promo", pa.bool_(), False),
            _f("risk_band", pa.string(), False),
            _f("installment", MONEY, False),
            _f("total_interest", MONEY, False),
            _f("first_due_date", pa.date32(), False),
            _f("maturity_date", pa.date32(), False),
        ]
    ),
)

CORE_REPAYMENT_SCHEDULE = LakeTable(
    namespace="core",
    name="repayment_schedule",
    partition_column=PARTITION,
    description="Amortization schedules; a partial refund issues a new schedule_version.",
    schema=pa.schema(
        [
            _business_date(),
            _f("loan_id", pa.int64(), False),
            _f("schedule_version", pa.int32(), False),
            _f("effective_date", pa.date32(), False),
            _f("installment_number", pa.int32(), False),
            _f("due_date", pa.date32(), False),
            _f("installment", MONEY, False),
            _f("principal", MONEY, False),
            _f("interest", MONEY, False),
            _f("balance_after", MONEY, False),
        ]
    ),
)

CORE_PAYMENTS = LakeTable(
    namespace="core",
    name="payments",
    partition_column=PARTITION,
    description="Payments; a reversed payment stays, with reversed=true and no effect on balances.",
    schema=pa.schema(
        [
            _business_date(),
            _f("payment_id", pa.int64(), False),
            _f("loan_id", pa.int64(), False),
            _f("payment_date", pa.date32(), False),
            _f("installment_number", pa.int32(), False),
            _f("due_date", pa.date32(), False),
            _f("payment_status", pa.string(), False),
            _f("days_late", pa.int32(), False),
            _f("amount", MONEY, False),
            _f("principal", MONEY, False),
            _f("interest", MONEY, False),
            _f("reversed", pa.bool_(), False),
            _f("reversal_reason", pa.string()),
        ]
    ),
)

CORE_REFUNDS = LakeTable(
    namespace="core",
    name="refunds",
    partition_column=PARTITION,
    description="Merchant refunds; each reduces the loan's principal.",
    schema=pa.schema(
        [
            _business_date(),
            _f("refund_id", pa.int64(), False),
            _f("loan_id", pa.int64(), False),
            _f("merchant_id", pa.int64(), False),
            _f("refund_date", pa.date32(), False),
            _f("refund_type", pa.string(), False),
            _f("reason", pa.string()),
            _f("amount", MONEY, False),
        ]
    ),
)

CORE_CHARGE_OFFS = LakeTable(
    namespace="core",
    name="charge_offs",
    partition_column=PARTITION,
    description="Loans charged off at 120+ days past due, with the principal and interest written off.",
    schema=pa.schema(
        [
            _business_date(),
            _f("loan_id", pa.int64(), False),
            _f("charge_off_date", pa.date32(), False),
            _f("days_past_due", pa.int32(), False),
            _f("principal", MONEY, False),
            _f("interest", MONEY, False),
        ]
    ),
)

CORE_RECOVERIES = LakeTable(
    namespace="core",
    name="recoveries",
    partition_column=PARTITION,
    description="Money recovered on charged-off loans.",
    schema=pa.schema(
        [
            _business_date(),
            _f("recovery_id", pa.int64(), False),
            _f("loan_id", pa.int64(), False),
            _f("recovery_date", pa.date32(), False),
            _f("channel", pa.string(), False),
            _f("amount", MONEY, False),
        ]
    ),
)

DPD_BUCKETS = ("current", "1-29", "30-59", "60-89", "90-119", "120+")
LOAN_STATUSES = ("current", "delinquent", "charged_off", "paid_off", "cancelled")
# A loan is open (accrues interest, counts in open balances) while its status is one of these.
OPEN_STATUSES = ("current", "delinquent")

# One installment of a loan as the book carries it (see CORE_LOAN_DAILY_STATUS.installments); due_date,
# installment and interest are null for an installment number paid toward that the version in force does not have.
# Every field nullable: Spark cannot cast to a struct with required fields (the book's transform always sets the
# number and what was paid).
INSTALLMENT_STATE = pa.struct(
    [
        _f("installment_number", pa.int32()),
        _f("due_date", pa.date32()),
        _f("installment", MONEY),
        _f("interest", MONEY),
        _f("paid", MONEY),
    ]
)

CORE_LOAN_DAILY_STATUS = LakeTable(
    namespace="core",
    name="loan_daily_status",
    partition_column=PARTITION,
    description=(
        "Per open loan per business day: balances carried from the previous business day's partition, days past "
        "due from the oldest installment not fully paid, and status; a loan's last row is the day it closes. Each "
        "row also carries the loan's installments under the schedule version in force, with what was paid toward "
        "each: the next day starts from them."
    ),
    schema=pa.schema(
        [
            _business_date(),
            _f("loan_id", pa.int64(), False),
            _f("origination_date", pa.date32(), False),
            _f("vintage_month", pa.date32(), False),
            _f("term_months", pa.int32(), False),
            _f("risk_band", pa.string(), False),
            _f("merchant_id", pa.int64(), False),
            _f("merchant_category", pa.string()),
            _f("principal_originated", MONEY, False),
            _f("principal_repaid", MONEY, False),  # to date
            _f("principal_refunded", MONEY, False),  # to date
            _f("principal_charged_off", MONEY, False),
            _f("outstanding_principal", MONEY, False),
            _f("interest_paid", MONEY, False),  # to date
            _f("accrued_interest", MONEY, False),  # scheduled interest due to date, not yet paid
            _f("days_past_due", pa.int32(), False),
            _f("dpd_bucket", pa.string(), False),
            _f("status", pa.string(), False),
            _f("ever_30_plus", pa.bool_(), False),
            _f("ever_60_plus", pa.bool_(), False),
            # The state a day carries to the next, so that a day reads only its own drop: the schedule version in
            # force and each installment of it, with what was paid toward it to date (also payments toward an
            # installment number the version does not have: a later version may). Null in a book written before
            # the book carried them.
            _f("schedule_version", pa.int32()),
            _f("installments", pa.list_(INSTALLMENT_STATE)),
        ]
    ),
)

CORE_CLOSED_LOANS = LakeTable(
    namespace="core",
    name="closed_loans",
    partition_column=PARTITION,
    description=(
        "Each closed loan's final row of the loan book, on the business day it closed (paid off, cancelled, charged "
        "off): the book then drops it, and reporting adds these rows so a cohort never shrinks."
    ),
    schema=CORE_LOAN_DAILY_STATUS.schema,
)

LEDGER_ACCOUNTS = (
    "loans_receivable",
    "interest_receivable",
    "merchant_payable",
    "cash",
    "interest_income",
    "credit_losses",
    "recovery_income",
)

CORE_LEDGER_ENTRIES = LakeTable(
    namespace="core",
    name="ledger_entries",
    partition_column=PARTITION,
    description="Double-entry journal: every event posts balanced debit and credit lines.",
    schema=pa.schema(
        [
            _business_date(),
            _f("entry_id", pa.string(), False),  # event type and source id; both lines of an entry share it
            _f("event_type", pa.string(), False),
            _f("event_date", pa.date32(), False),
            _f("loan_id", pa.int64(), False),
            _f("account", pa.string(), False),
            _f("debit", MONEY, False),
            _f("credit", MONEY, False),
        ]
    ),
)

CORE_TABLES = (
    CORE_CUSTOMERS,
    CORE_MERCHANTS,
    CORE_APPLICATIONS,
    CORE_LOANS,
    CORE_REPAYMENT_SCHEDULE,
    CORE_PAYMENTS,
    CORE_REFUNDS,
    CORE_CHARGE_OFFS,
    CORE_RECOVERIES,
    CORE_LOAN_DAILY_STATUS,
    CORE_CLOSED_LOANS,
    CORE_LEDGER_ENTRIES,
)

# -- reporting --------------------------------------------------------------------------------------------------

REPORTING_PORTFOLIO_DAILY = LakeTable(
    namespace="reporting",
    name="portfolio_daily",
    partition_column=PARTITION,
    description="Outstanding principal and loan counts by vintage month, term, risk band, category and DPD bucket.",
    schema=pa.schema(
        [
            _business_date(),
            _f("vintage_month", pa.date32(), False),
            _f("term_months", pa.int32(), False),
            _f("risk_band", pa.string(), False),
            _f("merchant_category", pa.string()),
            _f("dpd_bucket", pa.string(), False),
            _f("loans", pa.int64(), False),
            _f("outstanding_principal", MONEY, False),
            _f("principal_originated", MONEY, False),
            _f("principal_repaid", MONEY, False),
            _f("principal_refunded", MONEY, False),
            _f("principal_charged_off", MONEY, False),
        ]
    ),
)

REPORTING_VINTAGE_CURVES = LakeTable(
    namespace="reporting",
    name="vintage_curves",
    partition_column=PARTITION,
    description=(
        "Per origination cohort and months on book, as of the business date: cumulative 30+/60+ and charge-off rates."
    ),
    schema=pa.schema(
        [
            _business_date(),
            _f("vintage_month", pa.date32(), False),
            _f("months_on_book", pa.int32(), False),
            _f("loans", pa.int64(), False),
            _f("principal_originated", MONEY, False),
            _f("ever_30_plus_rate", pa.float64(), False),
            _f("ever_60_plus_rate", pa.float64(), False),
            _f("charge_off_rate", pa.float64(), False),  # charged-off principal / originated principal
        ]
    ),
)

REPORTING_MERCHANT_PERFORMANCE = LakeTable(
    namespace="reporting",
    name="merchant_performance",
    partition_column=PARTITION,
    description="Per merchant as of the business date: originations, refunds, delinquency and charge-offs to date.",
    schema=pa.schema(
        [
            _business_date(),
            _f("merchant_id", pa.int64(), False),
            _f("merchant_category", pa.string()),
            _f("loans", pa.int64(), False),
            _f("principal_originated", MONEY, False),
            _f("principal_refunded", MONEY, False),
            _f("outstanding_principal", MONEY, False),
            _f("delinquent_loans", pa.int64(), False),  # 30+ days past due today
            _f("delinquent_principal", MONEY, False),
            _f("principal_charged_off", MONEY, False),
        ]
    ),
)

# -- partitions -------------------------------------------------------------------------------------------------

# The lender's books close on New York time; a day's drop lands that evening, while its partition's window is
# still open (end_offset=1), so it can be loaded the same night. Federal Reserve holidays are no partitions.
LENDING_TIMEZONE = "America/New_York"
LENDING_PARTITIONS = LENDING_CALENDAR.partitions_def(LENDING_START, timezone=LENDING_TIMEZONE, end_offset=1)

# A backfill run of a lending table covers up to a month of business days: one Spark job, one commit.
DAYS_PER_WRITE = 23
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=DAYS_PER_WRITE)
# A day chain's runs (the raw load, the loan book) can only go one after another, and each link of the chain cost a
# daemon tick, a launch and a Spark start (about a minute) on top of its work: their backfill runs cover four
# months, written a month at a time, so a year is four links instead of sixteen (docs/benchmarks.md, "Backfill").
# Their compute profile's max runtime must cover four writes.
DAY_CHAIN_DAYS_PER_RUN = 4 * DAYS_PER_WRITE
DAY_CHAIN_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=DAY_CHAIN_DAYS_PER_RUN)
