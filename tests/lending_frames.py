"""Small hand-built core tables for the pure-function tests of the lending transforms.

Each builder returns one row (a dict) of a core table with the columns a test does not care about filled with
plain defaults; ``frame`` turns rows into a DataFrame with the table's declared Spark schema, so a row missing a
required column fails loudly. Money is given as strings of decimals ("102.00") and becomes ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession

from assets.lending.tables import (
    CORE_CHARGE_OFFS,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_PAYMENTS,
    CORE_RECOVERIES,
    CORE_REFUNDS,
    CORE_REPAYMENT_SCHEDULE,
    PARTITION,
)
from batch_platform.datasets import Step
from batch_platform.lake import LakeTable
from batch_platform.lake.spark_io import spark_schema


def money(value: Decimal | str) -> Decimal:
    return Decimal(value)


def frame(spark: SparkSession, table: LakeTable, rows: Iterable[Mapping[str, Any]]) -> DataFrame:
    """Rows as a DataFrame of the table's declared schema (unknown keys are refused, missing ones are null)."""
    schema = spark_schema(table.schema)
    names = {f.name for f in schema.fields}
    records = []
    for row in rows:
        if unknown := set(row) - names:
            raise KeyError(f"{table.identifier} has no columns {sorted(unknown)}")
        records.append(tuple(row.get(f.name) for f in schema.fields))
    return spark.createDataFrame(records, schema)


def step(spark: SparkSession, *days: date) -> Step:
    return Step(partition_keys=[d.isoformat() for d in days], session=spark, resources=None)


def collect(df: DataFrame, key: Sequence[str] = (PARTITION, "loan_id")) -> list[Row]:
    return sorted(df.collect(), key=lambda r: tuple(r[k] for k in key))


def loan(
    loan_id: int,
    day: date,
    principal: str,
    *,
    merchant_id: int = 7,
    category: str | None = "electronics",
    origination_date: date | None = None,
    term_months: int = 3,
    risk_band: str = "A",
) -> dict[str, Any]:
    """A row of core/loans: originated on ``day`` (or ``origination_date``) and landed in ``day``'s drop."""
    originated = origination_date or day
    return {
        PARTITION: day,
        "loan_id": loan_id,
        "application_id": loan_id + 1000,
        "customer_id": loan_id + 2000,
        "merchant_id": merchant_id,
        "merchant_category": category,
        "origination_date": originated,
        "vintage_month": originated.replace(day=1),
        "principal": money(principal),
        "term_months": term_months,
        "apr_bps": 1200,
        "is_zero_apr_promo": False,
        "risk_band": risk_band,
        "installment": money("0.00"),
        "total_interest": money("0.00"),
        "first_due_date": originated,
        "maturity_date": originated,
    }


def installment(
    loan_id: int,
    number: int,
    due: date,
    principal: str,
    interest: str,
    *,
    version: int = 1,
    effective: date,
    announced: date | None = None,
) -> dict[str, Any]:
    """A row of core/repayment_schedule; ``announced`` (the drop it landed in) defaults to ``effective``."""
    return {
        PARTITION: announced or effective,
        "loan_id": loan_id,
        "schedule_version": version,
        "effective_date": effective,
        "installment_number": number,
        "due_date": due,
        "installment": money(principal) + money(interest),
        "principal": money(principal),
        "interest": money(interest),
        "balance_after": money("0.00"),
    }


def payment(
    payment_id: int,
    loan_id: int,
    day: date,
    number: int,
    principal: str,
    interest: str = "0.00",
    *,
    paid_on: date | None = None,
    due: date | None = None,
    reversed_: bool = False,
) -> dict[str, Any]:
    """A row of core/payments against installment ``number``, in ``day``'s drop, paid on ``paid_on`` (or ``day``)."""
    return {
        PARTITION: day,
        "payment_id": payment_id,
        "loan_id": loan_id,
        "payment_date": paid_on or day,
        "installment_number": number,
        "due_date": due or day,
        "payment_status": "on_time",
        "days_late": 0,
        "amount": money(principal) + money(interest),
        "principal": money(principal),
        "interest": money(interest),
        "reversed": reversed_,
        "reversal_reason": "nsf" if reversed_ else None,
    }


def refund(refund_id: int, loan_id: int, day: date, amount: str) -> dict[str, Any]:
    return {
        PARTITION: day,
        "refund_id": refund_id,
        "loan_id": loan_id,
        "merchant_id": 7,
        "refund_date": day,
        "refund_type": "full",
        "reason": "returned",
        "amount": money(amount),
    }


def charge_off(loan_id: int, day: date, principal: str, interest: str, days_past_due: int = 120) -> dict[str, Any]:
    return {
        PARTITION: day,
        "loan_id": loan_id,
        "charge_off_date": day,
        "days_past_due": days_past_due,
        "principal": money(principal),
        "interest": money(interest),
    }


def recovery(recovery_id: int, loan_id: int, day: date, amount: str) -> dict[str, Any]:
    return {
        PARTITION: day,
        "recovery_id": recovery_id,
        "loan_id": loan_id,
        "recovery_date": day,
        "channel": "agency",
        "amount": money(amount),
    }


def book_row(
    loan_id: int,
    day: date,
    originated: str,
    *,
    repaid: str = "0.00",
    refunded: str = "0.00",
    charged_off: str = "0.00",
    interest_paid: str = "0.00",
    accrued_interest: str = "0.00",
    days_past_due: int = 0,
    dpd_bucket: str = "current",
    status: str = "current",
    ever_30_plus: bool = False,
    ever_60_plus: bool = False,
    origination_date: date,
    category: str | None = "electronics",
    schedule_version: int | None = None,
    installments: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A row of core/loan_daily_status (a previous business day's book, or the ledger's input); ``installments``
    (see ``carried_installment``) is the state the next day's book starts from."""
    outstanding = money(originated) - money(repaid) - money(refunded) - money(charged_off)
    return {
        PARTITION: day,
        "loan_id": loan_id,
        "origination_date": origination_date,
        "vintage_month": origination_date.replace(day=1),
        "term_months": 3,
        "risk_band": "A",
        "merchant_id": 7,
        "merchant_category": category,
        "principal_originated": money(originated),
        "principal_repaid": money(repaid),
        "principal_refunded": money(refunded),
        "principal_charged_off": money(charged_off),
        "outstanding_principal": outstanding,
        "interest_paid": money(interest_paid),
        "accrued_interest": money(accrued_interest),
        "days_past_due": days_past_due,
        "dpd_bucket": dpd_bucket,
        "status": status,
        "ever_30_plus": ever_30_plus,
        "ever_60_plus": ever_60_plus,
        "schedule_version": schedule_version,
        "installments": None if installments is None else [dict(i) for i in installments],
    }


def carried_installment(
    number: int, due: date | None, installment: Decimal | str | None, interest: Decimal | str | None, paid: str
) -> dict[str, Any]:
    """An installment as a book row carries it: its schedule (None for a number only paid toward) and what was paid."""
    return {
        "installment_number": number,
        "due_date": due,
        "installment": None if installment is None else money(installment),
        "interest": None if interest is None else money(interest),
        "paid": money(paid),
    }


def loans(spark: SparkSession, *rows: Mapping[str, Any]) -> DataFrame:
    return frame(spark, CORE_LOANS, rows)


def schedule(spark: SparkSession, *rows: Mapping[str, Any]) -> DataFrame:
    return frame(spark, CORE_REPAYMENT_SCHEDULE, rows)


def payments(spark: SparkSession, *rows: Mapping[str, Any]) -> DataFrame:
    return frame(spark, CORE_PAYMENTS, rows)


def refunds(spark: SparkSession, *rows: Mapping[str, Any]) -> DataFrame:
    return frame(spark, CORE_REFUNDS, rows)


def charge_offs(spark: SparkSession, *rows: Mapping[str, Any]) -> DataFrame:
    return frame(spark, CORE_CHARGE_OFFS, rows)


def recoveries(spark: SparkSession, *rows: Mapping[str, Any]) -> DataFrame:
    return frame(spark, CORE_RECOVERIES, rows)


def book(spark: SparkSession, *rows: Mapping[str, Any]) -> DataFrame:
    return frame(spark, CORE_LOAN_DAILY_STATUS, rows)
