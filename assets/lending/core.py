"""Core loan tables: raw landing rows cleaned, typed to money, PII tokenized, and the daily loan book.

Every core table is written through write-audit-publish: the partition lands on an audit branch, its audits run
there, and main only sees it once every blocking audit passes.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from assets.lending.schedule import previous_business_day
from assets.lending.tables import (
    CORE_APPLICATIONS,
    CORE_CHARGE_OFFS,
    CORE_CUSTOMERS,
    CORE_LEDGER_ENTRIES,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_MERCHANTS,
    CORE_PAYMENTS,
    CORE_RECOVERIES,
    CORE_REFUNDS,
    CORE_REPAYMENT_SCHEDULE,
    LENDING_PARTITIONS,
    LENDING_START,
    PARTITION,
    RAW_TABLES,
)
from batch_platform.assets import lake_asset
from batch_platform.audit import (
    Audit,
    AuditOutcome,
    audit_check_specs,
    not_null,
    rows_satisfy,
    unique,
    write_audit_publish,
)
from batch_platform.lake import IcebergLakeResource, LakeTable
from batch_platform.lake.spark_io import spark_schema
from batch_platform.partitions import partition_keys
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource

MONEY = "decimal(18,2)"
# A multi-partition backfill run processes up to a month of business days in one Spark job and one commit.
CORE_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=23)


def cents_to_money(column: str) -> Column:
    """Integer cents to decimal(18, 2), exactly (no floating point on the way)."""
    return (F.col(column).cast("decimal(18,0)") / F.lit(100)).cast(MONEY)


def project(table: LakeTable, df: DataFrame) -> DataFrame:
    """Keep the table's declared columns: raw-only columns (cents, drop_version) are left behind on purpose."""
    return df.select(*table.schema.names)


def history(keys: Sequence[str]) -> dg.PartitionKeyRange:
    """Every partition from the lender's first day up to the last key of this step."""
    return dg.PartitionKeyRange(LENDING_START, max(keys))


REFERENCES_A_LOAN = "references_a_loan"


def references(name: str, column: str, parent: Callable[[], DataFrame], parent_column: str, description: str) -> Audit:
    """Every row's ``column`` value exists in ``parent``: an orphan payment or refund must not reach main."""

    def evaluate(df: DataFrame) -> AuditOutcome:
        # Probe the parent's history with the step's few distinct ids (broadcast) instead of shuffling the whole
        # history into a join: the history only has to be scanned once, never moved.
        wanted = F.broadcast(df.select(column).distinct())
        known = parent().select(F.col(parent_column).alias(column)).join(wanted, column, "left_semi").distinct()
        orphans = df.join(known, column, "left_anti")
        return AuditOutcome.from_failures(orphans.select(column, PARTITION))

    return Audit(name, description, evaluate)


# -- simple raw -> core tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoreTable:
    """A core table computed from one raw dataset of the same partitions."""

    table: LakeTable
    raw_dataset: str
    transform: Callable[[DataFrame], DataFrame]
    audits: Sequence[Audit]
    extra_deps: Sequence[dg.AssetKey] = field(default_factory=tuple)


def build_core_asset(spec: CoreTable) -> dg.AssetsDefinition:
    raw = RAW_TABLES[spec.raw_dataset]

    @lake_asset(
        spec.table,
        partitions_def=LENDING_PARTITIONS,
        deps=[raw.asset_key, *spec.extra_deps],
        kinds=("spark", "iceberg"),
        backfill_policy=CORE_BACKFILL,
        check_specs=audit_check_specs(spec.table, spec.audits),
    )
    def _core_asset(
        context: dg.AssetExecutionContext, lake: IcebergLakeResource, spark: SparkResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        session = spark.session_for(context)
        rows = lake.read_spark(session, raw, partition_keys(context))
        yield from write_audit_publish(
            context, lake, spark, spec.table, project(spec.table, spec.transform(rows)), spec.audits
        )

    return _core_asset


def _merchants(rows: DataFrame) -> DataFrame:
    return rows


def _applications(rows: DataFrame) -> DataFrame:
    return rows.withColumn("requested_amount", cents_to_money("requested_amount_cents"))


def _repayment_schedule(rows: DataFrame) -> DataFrame:
    for name in ("installment", "principal", "interest", "balance_after"):
        rows = rows.withColumn(name, cents_to_money(f"{name}_cents"))
    return rows


def _payments(rows: DataFrame) -> DataFrame:
    for name in ("amount", "principal", "interest"):
        rows = rows.withColumn(name, cents_to_money(f"{name}_cents"))
    return rows


def _amount(rows: DataFrame) -> DataFrame:
    return rows.withColumn("amount", cents_to_money("amount_cents"))


def _charge_offs(rows: DataFrame) -> DataFrame:
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


SIMPLE_CORE_TABLES: list[CoreTable] = [
    CoreTable(CORE_MERCHANTS, "merchants", _merchants, [unique("merchant_id"), not_null("category", "region")]),
    CoreTable(
        CORE_APPLICATIONS,
        "applications",
        _applications,
        [
            unique("application_id"),
            rows_satisfy(
                "requested_amount_positive", "requested amounts are positive", lambda: F.col("requested_amount") > 0
            ),
            rows_satisfy(
                "offered_apr_in_bounds",
                "offered APR is within 0-36% when offered",
                lambda: F.col("offered_apr_bps").isNull() | F.col("offered_apr_bps").between(0, 3600),
            ),
        ],
    ),
    CoreTable(
        CORE_REPAYMENT_SCHEDULE,
        "repayment_schedule",
        _repayment_schedule,
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
    ),
]


# -- assets that need more than one input -----------------------------------------------------------------------


@lake_asset(
    CORE_CUSTOMERS,
    partitions_def=LENDING_PARTITIONS,
    deps=[RAW_TABLES["customers"].asset_key],
    kinds=("spark", "iceberg"),
    backfill_policy=CORE_BACKFILL,
    check_specs=audit_check_specs(CORE_CUSTOMERS, [unique("customer_id")]),
)
def core_customers(
    context: dg.AssetExecutionContext, lake: IcebergLakeResource, spark: SparkResource, pii: PiiTokenizer
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Customers with every identifying field replaced by a keyed HMAC token; raw.customers keeps the clear PII."""
    session = spark.session_for(context)
    raw = lake.read_spark(session, RAW_TABLES["customers"], partition_keys(context))
    tokenized = raw.select(
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
    yield from write_audit_publish(context, lake, spark, CORE_CUSTOMERS, tokenized, [unique("customer_id")])


LOAN_AUDITS: list[Audit] = [
    unique("loan_id"),
    rows_satisfy("principal_positive", "loans have a positive principal", lambda: F.col("principal") > 0),
    rows_satisfy("apr_in_bounds", "APR is within 0-36%", lambda: F.col("apr_bps").between(0, 3600)),
    rows_satisfy("term_is_offered", "term is 3, 6, 12 or 24 months", lambda: F.col("term_months").isin(3, 6, 12, 24)),
]


@lake_asset(
    CORE_LOANS,
    partitions_def=LENDING_PARTITIONS,
    deps=[RAW_TABLES["loans"].asset_key, CORE_MERCHANTS.asset_key],
    kinds=("spark", "iceberg"),
    backfill_policy=CORE_BACKFILL,
    check_specs=audit_check_specs(CORE_LOANS, LOAN_AUDITS),
)
def core_loans(
    context: dg.AssetExecutionContext, lake: IcebergLakeResource, spark: SparkResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Originated loans in money, with their vintage month and merchant category for reporting."""
    session = spark.session_for(context)
    keys = partition_keys(context)
    raw = lake.read_spark(session, RAW_TABLES["loans"], keys)
    merchants = lake.read_spark(session, CORE_MERCHANTS, history(keys)).select(
        "merchant_id", F.col("category").alias("merchant_category")
    )
    loans = (
        raw.join(F.broadcast(merchants.dropDuplicates(["merchant_id"])), "merchant_id", "left")
        .withColumn("vintage_month", F.trunc("origination_date", "month"))
        .withColumn("principal", cents_to_money("principal_cents"))
        .withColumn("installment", cents_to_money("installment_cents"))
        .withColumn("total_interest", cents_to_money("total_interest_cents"))
    )
    yield from write_audit_publish(context, lake, spark, CORE_LOANS, project(CORE_LOANS, loans), LOAN_AUDITS)


def _loan_event_asset(
    table: LakeTable,
    raw_dataset: str,
    transform: Callable[[DataFrame], DataFrame],
    key: Sequence[str],
    amount_rule: tuple[str, str, Callable[[], Column]],
) -> dg.AssetsDefinition:
    """A core table of loan events: unique key, an amount rule, and every row references a known loan."""
    static_audits = [unique(*key), rows_satisfy(*amount_rule)]

    @lake_asset(
        table,
        partitions_def=LENDING_PARTITIONS,
        deps=[RAW_TABLES[raw_dataset].asset_key, CORE_LOANS.asset_key],
        kinds=("spark", "iceberg"),
        backfill_policy=CORE_BACKFILL,
        # The loan reference audit reads core.loans, so it is built when the step runs; its check is declared here.
        check_specs=[
            *audit_check_specs(table, static_audits),
            dg.AssetCheckSpec(
                REFERENCES_A_LOAN, asset=table.asset_key, description="every row references a known loan"
            ),
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, lake: IcebergLakeResource, spark: SparkResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        session = spark.session_for(context)
        keys = partition_keys(context)
        rows = transform(lake.read_spark(session, RAW_TABLES[raw_dataset], keys))
        loans = references(
            REFERENCES_A_LOAN,
            "loan_id",
            lambda: lake.read_spark(session, CORE_LOANS, history(keys)),
            "loan_id",
            "every row references a known loan",
        )
        yield from write_audit_publish(context, lake, spark, table, project(table, rows), [*static_audits, loans])

    return _asset


core_payments = _loan_event_asset(
    CORE_PAYMENTS,
    "payments",
    _payments,
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
core_refunds = _loan_event_asset(
    CORE_REFUNDS,
    "refunds",
    _amount,
    ["refund_id"],
    ("amount_positive", "refunds are positive", lambda: F.col("amount") > 0),
)
core_charge_offs = _loan_event_asset(
    CORE_CHARGE_OFFS,
    "charge_offs",
    _charge_offs,
    ["loan_id"],
    ("charged_off_at_120_dpd", "charge-off at 120+ days past due", lambda: F.col("days_past_due") >= 120),
)
core_recoveries = _loan_event_asset(
    CORE_RECOVERIES,
    "recoveries",
    _amount,
    ["recovery_id"],
    ("amount_positive", "recoveries are positive", lambda: F.col("amount") > 0),
)


# -- the daily loan book ----------------------------------------------------------------------------------------


def _dpd_bucket() -> Column:
    # A function, not a constant: Spark columns can only be built once a session exists.
    return (
        F.when(F.col("days_past_due") <= 0, "current")
        .when(F.col("days_past_due") < 30, "1-29")
        .when(F.col("days_past_due") < 60, "30-59")
        .when(F.col("days_past_due") < 90, "60-89")
        .when(F.col("days_past_due") < 120, "90-119")
        .otherwise("120+")
    )


_LOAN_ATTRIBUTES = [
    "loan_id",
    "origination_date",
    "vintage_month",
    "term_months",
    "risk_band",
    "merchant_id",
    "merchant_category",
]
_TO_DATE = ["principal_originated", "principal_repaid", "principal_refunded", "principal_charged_off", "interest_paid"]


def _money_sum(column: str) -> Column:
    return F.sum(column).cast(MONEY)


def _zero() -> Column:
    return F.lit(0).cast(MONEY)


@dataclass(frozen=True)
class _BookInputs:
    """Everything a run of loan_daily_status reads, read once for all its days."""

    new_loans: DataFrame
    payments: DataFrame  # history up to the run's last day, reversed payments excluded
    refunds: DataFrame
    charge_offs: DataFrame
    schedule: DataFrame  # history up to the run's last day


def _status_for_day(previous: DataFrame, inputs: _BookInputs, day: date) -> DataFrame:
    """One business day of the book: yesterday's balances, plus today's drop's events, plus days past due."""
    on_day = F.col(PARTITION) == F.lit(day)
    new = inputs.new_loans.where(on_day).select(
        *_LOAN_ATTRIBUTES,
        F.col("principal").alias("principal_originated"),
        *[_zero().alias(c) for c in _TO_DATE[1:]],
        F.lit(False).alias("ever_30_plus"),
        F.lit(False).alias("ever_60_plus"),
    )
    book = previous.select(*_LOAN_ATTRIBUTES, *_TO_DATE, "ever_30_plus", "ever_60_plus").unionByName(new)
    paid_today = (
        inputs.payments.where(on_day)
        .groupBy("loan_id")
        .agg(_money_sum("principal").alias("repaid_today"), _money_sum("interest").alias("interest_today"))
    )
    refunded_today = inputs.refunds.where(on_day).groupBy("loan_id").agg(_money_sum("amount").alias("refunded_today"))
    charged_today = (
        inputs.charge_offs.where(on_day).groupBy("loan_id").agg(_money_sum("principal").alias("charged_today"))
    )
    book = (
        book.join(paid_today, "loan_id", "left")
        .join(refunded_today, "loan_id", "left")
        .join(charged_today, "loan_id", "left")
        .select(
            *_LOAN_ATTRIBUTES,
            "principal_originated",
            (F.col("principal_repaid") + F.coalesce("repaid_today", _zero())).cast(MONEY).alias("principal_repaid"),
            (F.col("principal_refunded") + F.coalesce("refunded_today", _zero()))
            .cast(MONEY)
            .alias("principal_refunded"),
            (F.col("principal_charged_off") + F.coalesce("charged_today", _zero()))
            .cast(MONEY)
            .alias("principal_charged_off"),
            (F.col("interest_paid") + F.coalesce("interest_today", _zero())).cast(MONEY).alias("interest_paid"),
            "ever_30_plus",
            "ever_60_plus",
        )
        .withColumn(
            "outstanding_principal",
            (
                F.col("principal_originated")
                - F.col("principal_repaid")
                - F.col("principal_refunded")
                - F.col("principal_charged_off")
            ).cast(MONEY),
        )
    )
    return _with_delinquency(book, inputs, day)


def _with_delinquency(book: DataFrame, inputs: _BookInputs, day: date) -> DataFrame:
    """Days past due from the oldest installment not fully paid, under the schedule version in force on the day."""
    schedule = inputs.schedule.where((F.col("effective_date") <= F.lit(day)) & (F.col(PARTITION) <= F.lit(day)))
    in_force = schedule.groupBy("loan_id").agg(F.max("schedule_version").alias("schedule_version"))
    due = schedule.join(in_force, ["loan_id", "schedule_version"]).where(F.col("due_date") <= F.lit(day))
    paid = (
        inputs.payments.where((F.col(PARTITION) <= F.lit(day)) & (F.col("payment_date") <= F.lit(day)))
        .groupBy("loan_id", "installment_number")
        .agg(_money_sum("amount").alias("paid"))
    )
    installments = due.join(paid, ["loan_id", "installment_number"], "left").withColumn(
        "short", F.col("installment") > F.coalesce("paid", _zero())
    )
    per_loan = installments.groupBy("loan_id").agg(
        F.min(F.when(F.col("short"), F.col("due_date"))).alias("oldest_unpaid_due_date"),
        _money_sum("interest").alias("interest_due"),
    )
    status = (
        F.when(F.col("principal_charged_off") > 0, "charged_off")
        .when(F.col("principal_refunded") >= F.col("principal_originated"), "cancelled")
        .when(F.col("outstanding_principal") <= 0, "paid_off")
        .when(F.col("days_past_due") > 0, "delinquent")
        .otherwise("current")
    )
    closed = F.col("status").isin("paid_off", "cancelled")
    return (
        book.join(per_loan, "loan_id", "left")
        .withColumn(
            "days_past_due",
            F.coalesce(F.datediff(F.lit(day), F.col("oldest_unpaid_due_date")), F.lit(0)).cast("int"),
        )
        .withColumn("status", status)
        .withColumn("days_past_due", F.when(closed, F.lit(0)).otherwise(F.col("days_past_due")))
        .withColumn(
            "accrued_interest",
            F.when(closed | (F.col("status") == "charged_off"), _zero())
            .otherwise(F.greatest(F.coalesce("interest_due", _zero()) - F.col("interest_paid"), _zero()))
            .cast(MONEY),
        )
        .withColumn("dpd_bucket", _dpd_bucket())
        .withColumn("ever_30_plus", F.col("ever_30_plus") | (F.col("days_past_due") >= 30))
        .withColumn("ever_60_plus", F.col("ever_60_plus") | (F.col("days_past_due") >= 60))
        .withColumn(PARTITION, F.lit(day))
        .drop("oldest_unpaid_due_date", "interest_due")
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
    backfill_policy=CORE_BACKFILL,
    description="A barrier, no table: every input of the loan book for the day is published.",
)
def loan_book_inputs() -> dg.MaterializeResult:
    return dg.MaterializeResult()


@lake_asset(
    CORE_LOAN_DAILY_STATUS,
    partitions_def=LENDING_PARTITIONS,
    deps=[
        # First in sorted key order, on purpose: see LOAN_BOOK_INPUTS.
        LOAN_BOOK_INPUTS,
        CORE_LOANS.asset_key,
        CORE_PAYMENTS.asset_key,
        CORE_REFUNDS.asset_key,
        CORE_CHARGE_OFFS.asset_key,
        CORE_REPAYMENT_SCHEDULE.asset_key,
        # Day-chained: balances carry from the previous business day's partition.
        dg.AssetDep(
            CORE_LOAN_DAILY_STATUS.asset_key,
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
        ),
    ],
    kinds=("spark", "iceberg"),
    backfill_policy=CORE_BACKFILL,
    check_specs=audit_check_specs(CORE_LOAN_DAILY_STATUS, STATUS_AUDITS),
    compute="medium",
)
def loan_daily_status(
    context: dg.AssetExecutionContext, lake: IcebergLakeResource, spark: SparkResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Per loan per business day: balances, days past due, DPD bucket and status; days processed in order."""
    session = spark.session_for(context)
    keys = sorted(partition_keys(context))
    first_day = date.fromisoformat(keys[0])
    previous = _previous_book(lake, session, first_day)
    inputs = _BookInputs(
        new_loans=lake.read_spark(session, CORE_LOANS, keys),
        payments=lake.read_spark(session, CORE_PAYMENTS, history(keys)).where(~F.col("reversed")).cache(),
        refunds=lake.read_spark(session, CORE_REFUNDS, keys),
        charge_offs=lake.read_spark(session, CORE_CHARGE_OFFS, keys),
        schedule=lake.read_spark(session, CORE_REPAYMENT_SCHEDULE, history(keys)).cache(),
    )
    days = []
    for key in keys:
        # Each day starts from the one before; checkpointing keeps a month-long run's plan from growing daily.
        previous = _status_for_day(previous, inputs, date.fromisoformat(key)).localCheckpoint()
        days.append(previous)
    book = days[0]
    for day in days[1:]:
        book = book.unionByName(day)
    yield from write_audit_publish(context, lake, spark, CORE_LOAN_DAILY_STATUS, book, STATUS_AUDITS)
    inputs.payments.unpersist()
    inputs.schedule.unpersist()


def _previous_book(lake: IcebergLakeResource, session: SparkSession, first_day: date) -> DataFrame:
    """The book of the business day before ``first_day``; empty before the lender's first day, else required."""
    previous_day = previous_business_day(first_day)
    empty = session.createDataFrame([], spark_schema(CORE_LOAN_DAILY_STATUS.schema))
    if previous_day < date.fromisoformat(LENDING_START):
        return empty
    lake.table(CORE_LOAN_DAILY_STATUS)  # created on first use, so an empty first partition reads as empty
    previous = lake.read_spark(session, CORE_LOAN_DAILY_STATUS, [previous_day.isoformat()])
    if previous.limit(1).count() == 0:
        loans_before = lake.read_spark(
            session, CORE_LOANS, dg.PartitionKeyRange(LENDING_START, previous_day.isoformat())
        ).limit(1)
        if loans_before.count():
            raise dg.Failure(
                description=(
                    f"core/loan_daily_status for {previous_day} is missing: balances carry from the previous business "
                    "day, so materialize the days in order (a backfill does this)."
                )
            )
    return previous


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
            (amount if side == "debit" else _zero()).cast(MONEY).alias("debit"),
            (amount if side == "credit" else _zero()).cast(MONEY).alias("credit"),
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
            _money_sum("debit").alias("debits"), _money_sum("credit").alias("credits")
        )
        return AuditOutcome.from_failures(totals.where(F.col("debits") != F.col("credits")))

    return Audit("entries_balance", "every journal entry's debits equal its credits", evaluate)


def _day_balances() -> Audit:
    def evaluate(df: DataFrame) -> AuditOutcome:
        totals = df.groupBy(PARTITION).agg(_money_sum("debit").alias("debits"), _money_sum("credit").alias("credits"))
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


@lake_asset(
    CORE_LEDGER_ENTRIES,
    partitions_def=LENDING_PARTITIONS,
    deps=[
        CORE_LOANS.asset_key,
        CORE_PAYMENTS.asset_key,
        CORE_REFUNDS.asset_key,
        CORE_CHARGE_OFFS.asset_key,
        CORE_RECOVERIES.asset_key,
        CORE_REPAYMENT_SCHEDULE.asset_key,
        CORE_LOAN_DAILY_STATUS.asset_key,
    ],
    kinds=("spark", "iceberg"),
    backfill_policy=CORE_BACKFILL,
    check_specs=audit_check_specs(CORE_LEDGER_ENTRIES, LEDGER_AUDITS),
)
def ledger_entries(
    context: dg.AssetExecutionContext, lake: IcebergLakeResource, spark: SparkResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The double-entry journal of the day's drop: originations, interest accrual, payments, refunds, charge-offs
    and recoveries. Reversed payments post nothing."""
    session = spark.session_for(context)
    keys = partition_keys(context)
    loans = lake.read_spark(session, CORE_LOANS, keys)
    payments = lake.read_spark(session, CORE_PAYMENTS, keys).where(~F.col("reversed"))
    refunds = lake.read_spark(session, CORE_REFUNDS, keys)
    charge_offs = lake.read_spark(session, CORE_CHARGE_OFFS, keys)
    recoveries = lake.read_spark(session, CORE_RECOVERIES, keys)
    accruals = _interest_accruals(lake, session, keys)
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
    yield from write_audit_publish(context, lake, spark, CORE_LEDGER_ENTRIES, entries, LEDGER_AUDITS)


def _interest_accruals(lake: IcebergLakeResource, session: SparkSession, keys: Sequence[str]) -> DataFrame:
    """Scheduled interest falling due within each drop's window, for loans open on that business day."""
    windows = session.createDataFrame(
        [(date.fromisoformat(k), previous_business_day(date.fromisoformat(k)) + timedelta(days=1)) for k in keys],
        f"{PARTITION} date, window_start date",
    )
    schedule = lake.read_spark(session, CORE_REPAYMENT_SCHEDULE, history(keys)).drop(PARTITION)
    open_loans = lake.read_spark(session, CORE_LOAN_DAILY_STATUS, keys).where(
        F.col("status").isin("current", "delinquent")
    )
    in_force = (
        open_loans.select(PARTITION, "loan_id")
        .join(schedule, "loan_id")
        .where(F.col("effective_date") <= F.col(PARTITION))
    )
    latest = in_force.groupBy(PARTITION, "loan_id").agg(F.max("schedule_version").alias("schedule_version"))
    return (
        in_force.join(latest, [PARTITION, "loan_id", "schedule_version"])
        .join(F.broadcast(windows), PARTITION)
        .where(F.col("due_date").between(F.col("window_start"), F.col(PARTITION)))
        .select(PARTITION, "loan_id", "installment_number", "due_date", "interest")
    )


core_assets: list[dg.AssetsDefinition] = [
    *[build_core_asset(spec) for spec in SIMPLE_CORE_TABLES],
    core_customers,
    core_loans,
    core_payments,
    core_refunds,
    core_charge_offs,
    core_recoveries,
    loan_book_inputs,
    loan_daily_status,
    ledger_entries,
]
