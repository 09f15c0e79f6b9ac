"""The loan book (core/loan_daily_status) and the loans it starts from, as pure functions on hand-built frames.

The scenario: loan 1, 300.00 originated on Wednesday 2023-03-01, three monthly installments of principal 100.00
plus interest 3.00, 2.00 and 1.00, due 2023-04-03, 2023-05-01 and 2023-06-01. Most tests start from the book of
the business day before (a hand-built row) and run the transform for one or a few business days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import lending_frames as lf
import pytest
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from assets.lending.core import (
    amount_frame,
    applications_frame,
    charge_offs_frame,
    loans_frame,
    payments_frame,
    repayment_schedule_frame,
)
from assets.lending.loan_book import loan_daily_status_frame
from assets.lending.tables import CORE_MERCHANTS, PARTITION, RAW_TABLES

ORIGINATED = date(2023, 3, 1)
DUE_1, DUE_2, DUE_3 = date(2023, 4, 3), date(2023, 5, 1), date(2023, 6, 1)
FRI, MON, TUE = date(2023, 4, 14), date(2023, 4, 17), date(2023, 4, 18)  # 14 and 15 days after DUE_1

MONEY_COLUMNS = {
    "principal_originated",
    "principal_repaid",
    "principal_refunded",
    "principal_charged_off",
    "outstanding_principal",
    "interest_paid",
    "accrued_interest",
}


def loan_1_schedule(version: int = 1, effective: date = ORIGINATED) -> list[dict[str, Any]]:
    return [
        lf.installment(1, 1, DUE_1, "100.00", "3.00", version=version, effective=effective),
        lf.installment(1, 2, DUE_2, "100.00", "2.00", version=version, effective=effective),
        lf.installment(1, 3, DUE_3, "100.00", "1.00", version=version, effective=effective),
    ]


def loan_1_book(
    day: date,
    *,
    paid: Mapping[int, str] | None = None,
    schedule: list[dict[str, Any]] | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """Loan 1's row in the book of ``day`` (by default: nothing paid yet), carrying its schedule (version 1 of
    ``loan_1_schedule`` unless given) and what was ``paid`` toward each installment number."""
    installments = [
        lf.carried_installment(
            r["installment_number"],
            r["due_date"],
            r["installment"],
            r["interest"],
            (paid or {}).get(r["installment_number"], "0.00"),
        )
        for r in (schedule or loan_1_schedule())
    ]
    return lf.book_row(
        1, day, "300.00", origination_date=ORIGINATED, schedule_version=1, installments=installments, **columns
    )


def run_book(
    spark: SparkSession,
    days: Iterable[date],
    *,
    new_loans: Iterable[Mapping[str, Any]] = (),
    payments: Iterable[Mapping[str, Any]] = (),
    refunds: Iterable[Mapping[str, Any]] = (),
    charge_offs: Iterable[Mapping[str, Any]] = (),
    schedule: Iterable[Mapping[str, Any]] = (),
    previous: Iterable[Mapping[str, Any]] = (),
) -> DataFrame:
    return loan_daily_status_frame(
        lf.step(spark, *days),
        lf.loans(spark, *new_loans),
        lf.payments(spark, *payments),
        lf.refunds(spark, *refunds),
        lf.charge_offs(spark, *charge_offs),
        lf.schedule(spark, *schedule),
        lf.book(spark, *previous),
    )


def book_rows(spark: SparkSession, days: Iterable[date], **inputs: Any) -> list[Row]:
    return lf.collect(run_book(spark, days, **inputs))


def expected(**columns: Any) -> dict[str, Any]:
    return {k: Decimal(v) if k in MONEY_COLUMNS else v for k, v in columns.items()}


def picked(row: Row, like: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in like}


def test_a_loan_originated_today_has_its_whole_principal_outstanding_and_is_current(spark: SparkSession) -> None:
    (row,) = book_rows(spark, [ORIGINATED], new_loans=[lf.loan(1, ORIGINATED, "300.00")], schedule=loan_1_schedule())
    assert row.asDict(recursive=True) == {
        PARTITION: ORIGINATED,
        "loan_id": 1,
        "origination_date": ORIGINATED,
        "vintage_month": date(2023, 3, 1),
        "term_months": 3,
        "risk_band": "A",
        "merchant_id": 7,
        "merchant_category": "electronics",
        **expected(
            principal_originated="300.00",
            principal_repaid="0.00",
            principal_refunded="0.00",
            principal_charged_off="0.00",
            outstanding_principal="300.00",
            interest_paid="0.00",
            accrued_interest="0.00",
        ),
        "days_past_due": 0,
        "dpd_bucket": "current",
        "status": "current",
        "ever_30_plus": False,
        "ever_60_plus": False,
        # What the next day starts from: the schedule that landed with the loan, nothing paid yet.
        "schedule_version": 1,
        "installments": [
            lf.carried_installment(1, DUE_1, "103.00", "3.00", "0.00"),
            lf.carried_installment(2, DUE_2, "102.00", "2.00", "0.00"),
            lf.carried_installment(3, DUE_3, "101.00", "1.00", "0.00"),
        ],
    }


def test_a_partial_payment_reduces_outstanding_and_leaves_the_installment_past_due_from_its_due_date(
    spark: SparkSession,
) -> None:
    # 50.00 paid on Saturday against the 103.00 due on 2023-04-03, landing in Monday's drop: interest first.
    (row,) = book_rows(
        spark,
        [MON],
        payments=[lf.payment(11, 1, MON, 1, "47.00", "3.00", paid_on=date(2023, 4, 15), due=DUE_1)],
        previous=[loan_1_book(FRI, days_past_due=11, dpd_bucket="1-29", status="delinquent")],
    )
    want = expected(
        principal_repaid="47.00",
        outstanding_principal="253.00",
        interest_paid="3.00",
        accrued_interest="0.00",
        days_past_due=14,
        dpd_bucket="1-29",
        status="delinquent",
    )
    assert picked(row, want) == want


def test_an_installment_paid_in_two_payments_across_days_becomes_current_when_the_second_lands(
    spark: SparkSession,
) -> None:
    monday, tuesday = book_rows(
        spark,
        [MON, TUE],
        payments=[
            lf.payment(11, 1, MON, 1, "47.00", "3.00", due=DUE_1),
            lf.payment(12, 1, TUE, 1, "53.00", due=DUE_1),
        ],
        previous=[loan_1_book(FRI, days_past_due=11, dpd_bucket="1-29", status="delinquent")],
    )
    assert picked(monday, {"outstanding_principal": 0, "days_past_due": 0, "status": 0}) == expected(
        outstanding_principal="253.00", days_past_due=14, status="delinquent"
    )
    want = expected(
        principal_repaid="100.00",
        outstanding_principal="200.00",
        interest_paid="3.00",
        accrued_interest="0.00",
        days_past_due=0,
        dpd_bucket="current",
        status="current",
    )
    assert picked(tuesday, want) == want


def test_an_installment_is_due_on_its_due_date_and_past_due_from_the_day_after(spark: SparkSession) -> None:
    thursday = date(2023, 3, 30)
    rows = book_rows(
        spark,
        [date(2023, 3, 31), DUE_1, date(2023, 4, 4)],
        previous=[loan_1_book(thursday)],
    )
    # Before the due date nothing is owed; on it the interest is due but the loan is not late yet; a day later it is.
    assert [(r["accrued_interest"], r["days_past_due"], r["dpd_bucket"], r["status"]) for r in rows] == [
        (Decimal("0.00"), 0, "current", "current"),
        (Decimal("3.00"), 0, "current", "current"),
        (Decimal("3.00"), 1, "1-29", "delinquent"),
    ]


def test_a_payment_made_before_the_due_date_pays_the_installment_in_advance(spark: SparkSession) -> None:
    rows = book_rows(
        spark,
        [date(2023, 3, 31), DUE_1, date(2023, 4, 4)],
        payments=[lf.payment(11, 1, date(2023, 3, 31), 1, "100.00", "3.00", due=DUE_1)],
        previous=[loan_1_book(date(2023, 3, 30))],
    )
    assert [(r["outstanding_principal"], r["accrued_interest"], r["days_past_due"], r["status"]) for r in rows] == [
        (Decimal("200.00"), Decimal("0.00"), 0, "current"),
        (Decimal("200.00"), Decimal("0.00"), 0, "current"),
        (Decimal("200.00"), Decimal("0.00"), 0, "current"),
    ]


def test_a_payment_of_a_later_drop_counts_neither_for_balances_nor_for_days_past_due_on_an_earlier_day(
    spark: SparkSession,
) -> None:
    monday, tuesday = book_rows(
        spark,
        [MON, TUE],
        payments=[lf.payment(11, 1, TUE, 1, "100.00", "3.00", due=DUE_1)],
        previous=[loan_1_book(FRI, days_past_due=11, dpd_bucket="1-29", status="delinquent")],
    )
    columns = {"principal_repaid": 0, "interest_paid": 0, "days_past_due": 0, "status": 0}
    assert picked(monday, columns) == expected(
        principal_repaid="0.00", interest_paid="0.00", days_past_due=14, status="delinquent"
    )
    assert picked(tuesday, columns) == expected(
        principal_repaid="100.00", interest_paid="3.00", days_past_due=0, status="current"
    )


def test_days_past_due_count_from_the_oldest_installment_not_fully_paid_and_accrue_its_unpaid_interest(
    spark: SparkSession,
) -> None:
    # Installment 1 was paid in full in April; installment 2 (due 2023-05-01) is not.
    (row,) = book_rows(
        spark,
        [date(2023, 5, 8)],
        previous=[
            loan_1_book(
                date(2023, 5, 5),
                paid={1: "103.00"},
                repaid="100.00",
                interest_paid="3.00",
                accrued_interest="2.00",
                days_past_due=4,
                dpd_bucket="1-29",
                status="delinquent",
            )
        ],
    )
    want = expected(
        outstanding_principal="200.00",
        interest_paid="3.00",
        accrued_interest="2.00",
        days_past_due=7,
        dpd_bucket="1-29",
        status="delinquent",
    )
    assert picked(row, want) == want


def test_a_rescheduled_loan_is_past_due_under_the_schedule_version_in_force_on_the_day(spark: SparkSession) -> None:
    # Version 2, in Tuesday's drop, lowers installment 1 to the 50.00 paid on Monday (the book carries version 1).
    version_2 = [
        lf.installment(1, 1, DUE_1, "47.00", "3.00", version=2, effective=TUE),
        lf.installment(1, 2, DUE_2, "126.50", "2.00", version=2, effective=TUE),
        lf.installment(1, 3, DUE_3, "126.50", "1.00", version=2, effective=TUE),
    ]
    monday, tuesday = book_rows(
        spark,
        [MON, TUE],
        payments=[lf.payment(11, 1, MON, 1, "47.00", "3.00", due=DUE_1)],
        schedule=version_2,
        previous=[loan_1_book(FRI, days_past_due=11, dpd_bucket="1-29", status="delinquent")],
    )
    columns = {"days_past_due": 0, "dpd_bucket": 0, "status": 0}
    assert picked(monday, columns) == {"days_past_due": 14, "dpd_bucket": "1-29", "status": "delinquent"}
    assert picked(tuesday, columns) == {"days_past_due": 0, "dpd_bucket": "current", "status": "current"}
    # Tuesday carries version 2, and the 50.00 paid on Monday toward installment 1 stays paid under it.
    assert tuesday["schedule_version"] == 2
    assert [r.asDict() for r in tuesday["installments"]] == [
        lf.carried_installment(1, DUE_1, "50.00", "3.00", "50.00"),
        lf.carried_installment(2, DUE_2, "128.50", "2.00", "0.00"),
        lf.carried_installment(3, DUE_3, "127.50", "1.00", "0.00"),
    ]


def test_a_refund_of_the_whole_principal_cancels_the_loan_with_no_days_past_due(spark: SparkSession) -> None:
    (row,) = book_rows(
        spark,
        [MON],
        refunds=[lf.refund(21, 1, MON, "300.00")],
        previous=[loan_1_book(FRI, accrued_interest="3.00", days_past_due=11, dpd_bucket="1-29", status="delinquent")],
    )
    want = expected(
        principal_refunded="300.00",
        outstanding_principal="0.00",
        accrued_interest="0.00",
        days_past_due=0,
        dpd_bucket="current",
        status="cancelled",
    )
    assert picked(row, want) == want


def test_a_partial_refund_reduces_outstanding_and_leaves_the_loan_open(spark: SparkSession) -> None:
    (row,) = book_rows(
        spark,
        [MON],
        refunds=[lf.refund(21, 1, MON, "120.50")],
        previous=[loan_1_book(FRI, days_past_due=11, dpd_bucket="1-29", status="delinquent")],
    )
    want = expected(principal_refunded="120.50", outstanding_principal="179.50", days_past_due=14, status="delinquent")
    assert picked(row, want) == want


def test_a_charge_off_leaves_no_outstanding_principal_and_no_accrued_interest(spark: SparkSession) -> None:
    charge_off_day = DUE_1 + timedelta(days=120)  # Tuesday 2023-08-01
    (row,) = book_rows(
        spark,
        [charge_off_day],
        charge_offs=[lf.charge_off(1, charge_off_day, "300.00", "6.00")],
        previous=[
            loan_1_book(
                date(2023, 7, 31),
                accrued_interest="6.00",
                days_past_due=119,
                dpd_bucket="90-119",
                status="delinquent",
                ever_30_plus=True,
                ever_60_plus=True,
            )
        ],
    )
    want = expected(
        principal_charged_off="300.00",
        outstanding_principal="0.00",
        accrued_interest="0.00",
        days_past_due=120,  # a charged-off loan keeps counting (reporting counts open loans only)
        dpd_bucket="120+",
        status="charged_off",
        ever_30_plus=True,
        ever_60_plus=True,
    )
    assert picked(row, want) == want


def test_a_past_due_loan_with_nothing_due_or_paid_is_a_calendar_day_more_past_due_each_day(
    spark: SparkSession,
) -> None:
    # Nothing of the loan falls due or is paid on these days: 63 days past due on Monday (the second installment,
    # due 1 May, is the oldest unpaid), the 4 July holiday counted on Wednesday, and the interest of the second and
    # third installments (both past due) still accrued.
    monday, wednesday, thursday = date(2023, 7, 3), date(2023, 7, 5), date(2023, 7, 6)
    rows = book_rows(
        spark,
        [wednesday, thursday],
        previous=[
            loan_1_book(
                monday,
                paid={1: "103.00"},
                repaid="100.00",
                interest_paid="3.00",
                accrued_interest="3.00",
                days_past_due=63,
                dpd_bucket="60-89",
                status="delinquent",
                ever_30_plus=True,
                ever_60_plus=True,
            )
        ],
    )
    assert [(r[PARTITION], r["days_past_due"], r["dpd_bucket"], r["accrued_interest"]) for r in rows] == [
        (wednesday, 65, "60-89", Decimal("3.00")),
        (thursday, 66, "60-89", Decimal("3.00")),
    ]


def test_a_loan_paid_off_early_has_its_final_row_that_day_and_leaves_the_book_as_its_due_dates_pass(
    spark: SparkSession,
) -> None:
    thursday, friday = date(2023, 4, 27), date(2023, 4, 28)
    payoff = lf.payment(12, 1, friday, 2, "200.00", "2.00", due=DUE_2)
    rows = book_rows(
        spark,
        [friday, DUE_2, DUE_2 + timedelta(days=1)],
        payments=[payoff],
        previous=[loan_1_book(thursday, paid={1: "103.00"}, repaid="100.00", interest_paid="3.00")],
    )
    assert [(r[PARTITION], r["status"], r["outstanding_principal"], r["accrued_interest"]) for r in rows] == [
        (friday, "paid_off", Decimal("0.00"), Decimal("0.00"))
    ]


def test_a_closed_loan_in_the_previous_book_is_not_carried(spark: SparkSession) -> None:
    # A book written before loans left it still holds closed loans: they stay out from the next day on.
    paid_off = lf.book_row(2, FRI, "50.00", repaid="50.00", status="paid_off", origination_date=ORIGINATED)
    rows = book_rows(
        spark,
        [MON],
        previous=[loan_1_book(FRI, days_past_due=11, dpd_bucket="1-29", status="delinquent"), paid_off],
    )
    assert [r["loan_id"] for r in rows] == [1]


@pytest.mark.parametrize("closed_on", ["the previous day", "a day of the range"])
def test_a_refund_for_a_loan_that_left_the_book_fails_the_step_naming_the_loan_and_day(
    spark: SparkSession, closed_on: str
) -> None:
    payoff = lf.payment(11, 1, FRI, 1, "300.00", "3.00", due=DUE_1)
    late_refund = lf.refund(21, 1, TUE, "40.00")
    if closed_on == "the previous day":
        days, previous = [MON, TUE], loan_1_book(FRI, repaid="300.00", interest_paid="3.00", status="paid_off")
    else:
        days, previous = [FRI, MON, TUE], loan_1_book(date(2023, 4, 13), days_past_due=10, status="delinquent")
    with pytest.raises(PySparkException, match="loan 1 on 2023-04-18: a payment, refund or charge-off for a loan"):
        book_rows(
            spark,
            days,
            payments=[payoff],
            refunds=[late_refund],
            previous=[previous],
        )


def test_the_last_installment_paid_pays_the_loan_off(spark: SparkSession) -> None:
    (row,) = book_rows(
        spark,
        [DUE_3],
        payments=[lf.payment(13, 1, DUE_3, 3, "100.00", "1.00", due=DUE_3)],
        previous=[
            loan_1_book(date(2023, 5, 31), paid={1: "103.00", 2: "102.00"}, repaid="200.00", interest_paid="5.00")
        ],
    )
    want = expected(
        principal_repaid="300.00",
        outstanding_principal="0.00",
        interest_paid="6.00",
        accrued_interest="0.00",
        days_past_due=0,
        dpd_bucket="current",
        status="paid_off",
    )
    assert picked(row, want) == want


def test_a_reversed_payment_counts_neither_for_balances_nor_for_days_past_due(spark: SparkSession) -> None:
    (row,) = book_rows(
        spark,
        [MON],
        payments=[lf.payment(11, 1, MON, 1, "100.00", "3.00", due=DUE_1, reversed_=True)],
        previous=[loan_1_book(FRI, accrued_interest="3.00", days_past_due=11, dpd_bucket="1-29", status="delinquent")],
    )
    want = expected(
        principal_repaid="0.00",
        outstanding_principal="300.00",
        interest_paid="0.00",
        accrued_interest="3.00",
        days_past_due=14,
        status="delinquent",
    )
    assert picked(row, want) == want


# days past due -> bucket, status, ever 30+, ever 60+ (each loan's only installment fell due that many days ago)
BUCKET_BOUNDARIES = [
    (0, "current", "current", False, False),
    (1, "1-29", "delinquent", False, False),
    (29, "1-29", "delinquent", False, False),
    (30, "30-59", "delinquent", True, False),
    (59, "30-59", "delinquent", True, False),
    (60, "60-89", "delinquent", True, True),
    (89, "60-89", "delinquent", True, True),
    (90, "90-119", "delinquent", True, True),
    (119, "90-119", "delinquent", True, True),
    (120, "120+", "delinquent", True, True),
]


def test_days_past_due_buckets_turn_at_1_30_60_90_and_120_days(spark: SparkSession) -> None:
    day, before = date(2023, 8, 1), date(2023, 7, 31)
    loan_ids = range(1, len(BUCKET_BOUNDARIES) + 1)
    rows = book_rows(
        spark,
        [day],
        # Each loan's row of the day before, as the book computed it then (one day less past due).
        previous=[
            lf.book_row(
                loan_id,
                before,
                "100.00",
                origination_date=ORIGINATED,
                schedule_version=1,
                installments=[lf.carried_installment(1, day - timedelta(days=dpd), "100.00", "0.00", "0.00")],
                days_past_due=max(dpd - 1, 0),
                status="delinquent" if dpd > 1 else "current",
                ever_30_plus=dpd - 1 >= 30,
                ever_60_plus=dpd - 1 >= 60,
            )
            for loan_id, (dpd, *_) in zip(loan_ids, BUCKET_BOUNDARIES, strict=True)
        ],
    )
    assert [
        (r["days_past_due"], r["dpd_bucket"], r["status"], r["ever_30_plus"], r["ever_60_plus"]) for r in rows
    ] == BUCKET_BOUNDARIES


def test_ever_30_plus_stays_true_after_the_loan_cures(spark: SparkSession) -> None:
    (row,) = book_rows(
        spark,
        [date(2023, 5, 8)],
        payments=[
            lf.payment(11, 1, date(2023, 5, 8), 1, "100.00", "3.00", due=DUE_1),
            lf.payment(12, 1, date(2023, 5, 8), 2, "100.00", "2.00", due=DUE_2),
        ],
        previous=[
            loan_1_book(
                date(2023, 5, 5),
                accrued_interest="5.00",
                days_past_due=32,
                dpd_bucket="30-59",
                status="delinquent",
                ever_30_plus=True,
            )
        ],
    )
    want = expected(
        outstanding_principal="100.00",
        accrued_interest="0.00",
        days_past_due=0,
        dpd_bucket="current",
        status="current",
        ever_30_plus=True,
        ever_60_plus=False,
    )
    assert picked(row, want) == want


def test_the_day_after_a_bank_holiday_chains_from_the_business_day_before_it(spark: SparkSession) -> None:
    # Tuesday 2023-07-04 is a Federal Reserve holiday: Wednesday's drop carries its payments, and Wednesday's book
    # starts from Monday's. Days past due count calendar days, the holiday included.
    monday, holiday, wednesday = date(2023, 7, 3), date(2023, 7, 4), date(2023, 7, 5)
    (row,) = book_rows(
        spark,
        [wednesday],
        payments=[lf.payment(11, 1, wednesday, 1, "47.00", "3.00", paid_on=holiday, due=monday)],
        previous=[
            loan_1_book(
                monday,
                schedule=[lf.installment(1, 1, monday, "100.00", "3.00", effective=ORIGINATED)],
                accrued_interest="3.00",
            )
        ],
    )
    want = expected(principal_repaid="47.00", outstanding_principal="253.00", days_past_due=2, status="delinquent")
    assert picked(row, want) == want


def test_a_two_day_step_gives_the_same_book_as_two_one_day_steps_chained(spark: SparkSession) -> None:
    new_loans = [lf.loan(2, MON, "450.00", origination_date=date(2023, 4, 15)), lf.loan(3, TUE, "80.00")]
    payments = [
        lf.payment(10, 1, FRI, 1, "10.00", due=DUE_1),  # history: already in Friday's book
        lf.payment(11, 1, MON, 1, "37.00", "3.00", due=DUE_1),
        lf.payment(12, 1, TUE, 1, "53.00", due=DUE_1),
        lf.payment(13, 1, TUE, 2, "20.00", due=DUE_2),
    ]
    refunds = [lf.refund(21, 2, TUE, "150.00")]
    schedule = [
        *loan_1_schedule(),
        lf.installment(2, 1, date(2023, 5, 15), "450.00", "4.50", effective=date(2023, 4, 15), announced=MON),
        lf.installment(3, 1, date(2023, 5, 18), "80.00", "0.80", effective=TUE),
    ]
    # Friday's book carries payment 10 (paid toward installment 1): a range never reads a drop before its first day.
    previous = [
        loan_1_book(FRI, paid={1: "10.00"}, repaid="10.00", days_past_due=11, dpd_bucket="1-29", status="delinquent")
    ]

    def on(day: date, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r[PARTITION] == day]

    def to(day: date, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r[PARTITION] <= day]

    both = book_rows(
        spark,
        [MON, TUE],
        new_loans=new_loans,
        payments=payments,
        refunds=refunds,
        schedule=schedule,
        previous=previous,
    )
    monday = book_rows(
        spark,
        [MON],
        new_loans=on(MON, new_loans),
        payments=to(MON, payments),
        refunds=on(MON, refunds),
        schedule=to(MON, schedule),
        previous=previous,
    )
    tuesday = book_rows(
        spark,
        [TUE],
        new_loans=on(TUE, new_loans),
        payments=to(TUE, payments),
        refunds=on(TUE, refunds),
        schedule=to(TUE, schedule),
        previous=[r.asDict() for r in monday],
    )
    assert [r.asDict() for r in both] == [r.asDict() for r in monday + tuesday]
    # And Tuesday carries Monday's balances on: loan 1 repaid 10 + 37 + 53 + 20, loan 2 refunded 150 of 450.
    assert [(r["loan_id"], r["outstanding_principal"], r["status"]) for r in tuesday] == [
        (1, Decimal("180.00"), "current"),
        (2, Decimal("300.00"), "current"),
        (3, Decimal("80.00"), "current"),
    ]


def test_a_drop_before_the_range_is_never_read_again_the_previous_book_carries_it(spark: SparkSession) -> None:
    # Friday's payment is in Friday's book already (installment 1 paid): given to Monday's run again, it changes
    # nothing; taken out of the carried installments, installment 1 is unpaid again.
    friday_payment = lf.payment(10, 1, FRI, 1, "100.00", "3.00", due=DUE_1)
    carried = loan_1_book(FRI, paid={1: "103.00"}, repaid="100.00", interest_paid="3.00")
    (row,) = book_rows(spark, [MON], payments=[friday_payment], previous=[carried])
    assert picked(row, {"principal_repaid": 0, "days_past_due": 0}) == expected(
        principal_repaid="100.00", days_past_due=0
    )
    forgotten = loan_1_book(FRI, repaid="100.00", interest_paid="3.00")
    (row,) = book_rows(spark, [MON], payments=[friday_payment], previous=[forgotten])
    assert picked(row, {"principal_repaid": 0, "days_past_due": 0}) == expected(
        principal_repaid="100.00", days_past_due=14
    )


def test_a_later_row_of_the_version_in_force_replaces_that_installment_and_keeps_what_was_paid(
    spark: SparkSession,
) -> None:
    # Version 1 is carried with 60.00 paid toward installment 2. Monday's drop moves installment 2 to 2023-05-15,
    # Tuesday's to 2023-05-22: each day takes the latest row landed by it; installments 1 and 3 stay as carried.
    moved = [
        lf.installment(1, 2, date(2023, 5, 15), "100.00", "2.00", effective=MON),
        lf.installment(1, 2, date(2023, 5, 22), "100.00", "2.00", effective=TUE),
    ]
    monday, tuesday = book_rows(
        spark, [MON, TUE], schedule=moved, previous=[loan_1_book(FRI, paid={1: "103.00", 2: "60.00"})]
    )
    assert [(r.installment_number, r.due_date, r.paid) for r in monday["installments"]] == [
        (1, DUE_1, Decimal("103.00")),
        (2, date(2023, 5, 15), Decimal("60.00")),
        (3, DUE_3, Decimal("0.00")),
    ]
    assert [r.due_date for r in tuesday["installments"]] == [DUE_1, date(2023, 5, 22), DUE_3]
    assert (monday["schedule_version"], tuesday["schedule_version"]) == (1, 1)


def test_a_previous_book_without_carried_installments_fails_the_step_naming_the_loan(spark: SparkSession) -> None:
    # A book written before the book carried installments: its days past due could not be continued.
    old_row = lf.book_row(1, FRI, "300.00", origination_date=ORIGINATED, days_past_due=11, status="delinquent")
    with pytest.raises(PySparkException, match="loan 1 on 2023-04-14: the previous day's book has no installments"):
        book_rows(spark, [MON], previous=[old_row])


def test_a_schedule_row_effective_after_its_drop_fails_the_step(spark: SparkSession) -> None:
    future = lf.installment(1, 1, DUE_2, "300.00", "3.00", version=2, effective=TUE, announced=MON)
    with pytest.raises(PySparkException, match="loan 1 on 2023-04-17: a schedule row effective, or a payment made"):
        book_rows(spark, [MON], schedule=[future], previous=[loan_1_book(FRI)])


# -- loans: the merchant's category as of the loan's day ------------------------------------------------------

APR_1, RECATEGORIZED = date(2023, 4, 3), MON


def raw_loan(loan_id: int, day: date, merchant_id: int, principal_cents: int = 30_001) -> dict[str, Any]:
    return {
        PARTITION: day,
        "drop_version": 1,
        "loan_id": loan_id,
        "application_id": loan_id + 1000,
        "customer_id": loan_id + 2000,
        "merchant_id": merchant_id,
        "origination_date": day - timedelta(days=2) if day.weekday() == 0 else day,
        "principal_cents": principal_cents,
        "term_months": 3,
        "apr_bps": 1200,
        "is_zero_apr_promo": False,
        "risk_band": "A",
        "installment_cents": 10_201,
        "total_interest_cents": 603,
        "first_due_date": day + timedelta(days=30),
        "maturity_date": day + timedelta(days=90),
    }


def merchant(merchant_id: int, day: date, category: str) -> dict[str, Any]:
    return {
        PARTITION: day,
        "merchant_id": merchant_id,
        "onboarded_date": APR_1,
        "merchant_name": f"merchant {merchant_id}",
        "category": category,
        "region": "northeast",
        "state": "NY",
        "city": "Albany",
    }


@pytest.fixture(scope="module")
def loans_out(spark: SparkSession) -> dict[int, Row]:
    # Merchant 7 is announced on 2023-04-03 as electronics and re-categorized in Monday 2023-04-17's drop as home
    # goods; merchant 8 is only announced on Tuesday.
    merchants = lf.frame(
        spark,
        CORE_MERCHANTS,
        [merchant(7, APR_1, "electronics"), merchant(7, RECATEGORIZED, "home_goods"), merchant(8, TUE, "travel")],
    )
    rows = lf.frame(
        spark,
        RAW_TABLES["loans"],
        [raw_loan(1, FRI, 7), raw_loan(2, MON, 7), raw_loan(3, TUE, 7), raw_loan(4, MON, 8)],
    )
    return {r["loan_id"]: r for r in loans_frame(rows, merchants).collect()}


def test_a_merchant_recategorized_on_a_later_day_keeps_an_earlier_loans_category(loans_out: dict[int, Row]) -> None:
    assert loans_out[1]["merchant_category"] == "electronics"


def test_a_loan_on_the_day_of_the_recategorization_and_after_takes_the_new_category(
    loans_out: dict[int, Row],
) -> None:
    assert (loans_out[2]["merchant_category"], loans_out[3]["merchant_category"]) == ("home_goods", "home_goods")


def test_a_merchant_announced_after_the_loan_leaves_the_loans_category_empty(loans_out: dict[int, Row]) -> None:
    assert loans_out[4]["merchant_category"] is None


def test_a_loan_is_one_row_in_money_with_its_vintage_month_whatever_its_merchants_versions(
    loans_out: dict[int, Row],
) -> None:
    assert sorted(loans_out) == [1, 2, 3, 4]
    # Loan 2 was originated on Saturday 2023-04-15 and landed in Monday's drop.
    assert {k: loans_out[2][k] for k in ("principal", "installment", "total_interest", "vintage_month")} == {
        "principal": Decimal("300.01"),
        "installment": Decimal("102.01"),
        "total_interest": Decimal("6.03"),
        "vintage_month": date(2023, 4, 1),
    }


# -- the simpler core frames: integer cents to decimal money, exactly ------------------------------------------

# The largest cents a decimal(18,2) holds: through a double it would come out 99999999999999.98.
LARGEST_CENTS = 9_999_999_999_999_999


@pytest.mark.parametrize(
    ("transform", "columns"),
    [
        (payments_frame, ["amount", "principal", "interest"]),
        (amount_frame, ["amount"]),
        (charge_offs_frame, ["principal", "interest"]),
        (repayment_schedule_frame, ["installment", "principal", "interest", "balance_after"]),
        (applications_frame, ["requested_amount"]),
    ],
)
def test_cents_become_decimal_money_to_the_cent(spark: SparkSession, transform: Any, columns: list[str]) -> None:
    cents = spark.createDataFrame(
        [(i, value) for i, value in enumerate([0, 1, 12_345, LARGEST_CENTS])], "i int, value long"
    ).select("i", *[F.col("value").alias(f"{c}_cents") for c in columns])
    rows = sorted(transform(cents).collect(), key=lambda r: r["i"])
    for column in columns:
        assert [r[column] for r in rows] == [
            Decimal("0.00"),
            Decimal("0.01"),
            Decimal("123.45"),
            Decimal("99999999999999.99"),
        ], column
