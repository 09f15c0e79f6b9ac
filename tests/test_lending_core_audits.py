"""Core audits that need more than one table, evaluated on small Spark DataFrames."""

from __future__ import annotations

from datetime import date

from pyspark.sql import SparkSession

from assets.lending.core import PAYMENTS, REFERENCES_A_LOAN


def test_a_payment_of_an_unknown_loan_fails_the_reference_audit_naming_the_loan(spark: SparkSession) -> None:
    loans = spark.createDataFrame([(1,), (2,), (3,)], "loan_id long")
    day = date(2023, 3, 1)
    payments = spark.createDataFrame(
        [(10, 1, day), (11, 2, day), (12, 99, day), (13, 99, day)], "payment_id long, loan_id long, business_date date"
    )
    (audit,) = [a for a in PAYMENTS.audits if a.name == REFERENCES_A_LOAN]
    # The audit reads the declared input "loans" (every loan up to the day), nothing else.
    assert audit.reads == ("loans",)
    outcome = audit.evaluate(payments, loans=loans)
    assert outcome.failing_rows == 2
    assert {row["loan_id"] for row in outcome.sample} == {99}
    assert audit.evaluate(payments.where("loan_id < 99"), loans=loans).passed


def test_a_payment_without_a_loan_id_fails_the_reference_audit(spark: SparkSession) -> None:
    loans = spark.createDataFrame([(1,), (2,)], "loan_id long")
    day = date(2023, 3, 1)
    payments = spark.createDataFrame(
        [(10, 1, day), (11, None, day), (12, 2, day)], "payment_id long, loan_id long, business_date date"
    )
    (audit,) = [a for a in PAYMENTS.audits if a.name == REFERENCES_A_LOAN]
    outcome = audit.evaluate(payments, loans=loans)
    assert outcome.failing_rows == 1
    assert outcome.sample == [{"loan_id": None}]
