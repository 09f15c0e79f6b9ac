"""The general ledger (core/ledger_entries) and its interest accruals, as pure functions on hand-built frames.

Monday 2023-04-17's drop covers Saturday 04-15 to Monday (the previous business day is Friday 04-14): loan 1
(300.00, originated on Saturday) and its events land in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

import lending_frames as lf
import pytest
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from assets.lending.core import LEDGER_AUDITS, interest_accruals, ledger_entries_frame
from assets.lending.tables import CORE_LEDGER_ENTRIES, PARTITION

FRI, SAT, MON, TUE = date(2023, 4, 14), date(2023, 4, 15), date(2023, 4, 17), date(2023, 4, 18)
ZERO = Decimal("0.00")

Line = tuple[str, str, date, int, str, Decimal, Decimal]  # entry, event type, event date, loan, account, dr, cr


def journal_frame(
    spark: SparkSession,
    days: Iterable[date] = (MON,),
    *,
    loans: Iterable[Mapping[str, Any]] = (),
    payments: Iterable[Mapping[str, Any]] = (),
    refunds: Iterable[Mapping[str, Any]] = (),
    charge_offs: Iterable[Mapping[str, Any]] = (),
    recoveries: Iterable[Mapping[str, Any]] = (),
    book: Iterable[Mapping[str, Any]] = (),
    previous_book: Iterable[Mapping[str, Any]] = (),
) -> DataFrame:
    return ledger_entries_frame(
        lf.step(spark, *days),
        lf.loans(spark, *loans),
        lf.payments(spark, *payments),
        lf.refunds(spark, *refunds),
        lf.charge_offs(spark, *charge_offs),
        lf.recoveries(spark, *recoveries),
        lf.book(spark, *book, *previous_book),
    )


def journal(spark: SparkSession, **inputs: Any) -> list[Line]:
    """The journal's lines of Monday's drop, sorted."""
    rows = journal_frame(spark, **inputs).collect()
    assert {r[PARTITION] for r in rows} <= {MON}
    return sorted(
        (r["entry_id"], r["event_type"], r["event_date"], r["loan_id"], r["account"], r["debit"], r["credit"])
        for r in rows
    )


def dr(value: str) -> tuple[Decimal, Decimal]:
    return Decimal(value), ZERO


def cr(value: str) -> tuple[Decimal, Decimal]:
    return ZERO, Decimal(value)


def open_loan(
    loan_id: int,
    day: date = MON,
    status: str = "current",
    schedule: Iterable[Mapping[str, Any]] = (),
    **columns: Any,
) -> dict[str, Any]:
    """Loan ``loan_id`` in the book of ``day``, with ``status``, carrying the installments of ``schedule`` (rows of
    core/repayment_schedule: the version in force on the day), nothing paid toward them."""
    installments = [
        lf.carried_installment(r["installment_number"], r["due_date"], r["installment"], r["interest"], "0.00")
        for r in schedule
    ]
    return lf.book_row(
        loan_id, day, "300.00", origination_date=SAT, status=status, installments=installments, **columns
    )


def test_an_origination_debits_loans_receivable_and_credits_merchant_payable_with_the_principal(
    spark: SparkSession,
) -> None:
    assert journal(spark, loans=[lf.loan(1, MON, "300.00", origination_date=SAT)]) == [
        ("orig-1", "origination", SAT, 1, "loans_receivable", *dr("300.00")),
        ("orig-1", "origination", SAT, 1, "merchant_payable", *cr("300.00")),
    ]


def test_a_payment_debits_cash_and_credits_its_principal_to_loans_receivable_and_its_interest_to_interest_receivable(
    spark: SparkSession,
) -> None:
    assert journal(spark, payments=[lf.payment(11, 1, MON, 1, "100.00", "3.00", paid_on=SAT)]) == [
        ("pay-11", "payment", SAT, 1, "cash", *dr("103.00")),
        ("pay-11", "payment", SAT, 1, "interest_receivable", *cr("3.00")),
        ("pay-11", "payment", SAT, 1, "loans_receivable", *cr("100.00")),
    ]


def test_a_payment_without_interest_posts_no_zero_interest_line(spark: SparkSession) -> None:
    assert journal(spark, payments=[lf.payment(12, 1, MON, 2, "25.50")]) == [
        ("pay-12", "payment", MON, 1, "cash", *dr("25.50")),
        ("pay-12", "payment", MON, 1, "loans_receivable", *cr("25.50")),
    ]


def test_a_reversed_payment_posts_nothing(spark: SparkSession) -> None:
    assert journal(spark, payments=[lf.payment(11, 1, MON, 1, "100.00", "3.00", reversed_=True)]) == []


def test_a_refund_debits_merchant_payable_and_credits_loans_receivable(spark: SparkSession) -> None:
    assert journal(spark, refunds=[lf.refund(21, 1, MON, "120.50")]) == [
        ("ref-21", "refund", MON, 1, "loans_receivable", *cr("120.50")),
        ("ref-21", "refund", MON, 1, "merchant_payable", *dr("120.50")),
    ]


def test_a_charge_off_writes_its_principal_and_interest_off_to_credit_losses(spark: SparkSession) -> None:
    assert journal(spark, charge_offs=[lf.charge_off(1, MON, "300.00", "6.00")]) == [
        ("co-1", "charge_off", MON, 1, "credit_losses", *dr("306.00")),
        ("co-1", "charge_off", MON, 1, "interest_receivable", *cr("6.00")),
        ("co-1", "charge_off", MON, 1, "loans_receivable", *cr("300.00")),
    ]


def test_a_recovery_debits_cash_and_credits_recovery_income(spark: SparkSession) -> None:
    assert journal(spark, recoveries=[lf.recovery(31, 1, MON, "40.00")]) == [
        ("rec-31", "recovery", MON, 1, "cash", *dr("40.00")),
        ("rec-31", "recovery", MON, 1, "recovery_income", *cr("40.00")),
    ]


def test_interest_falling_due_debits_interest_receivable_and_credits_interest_income(spark: SparkSession) -> None:
    assert journal(
        spark,
        book=[open_loan(1, schedule=[lf.installment(1, 1, SAT, "100.00", "3.00", effective=FRI)])],
    ) == [
        ("accr-1-1", "interest_accrual", SAT, 1, "interest_income", *cr("3.00")),
        ("accr-1-1", "interest_accrual", SAT, 1, "interest_receivable", *dr("3.00")),
    ]


def test_every_entry_balances_and_the_days_journal_passes_the_ledger_audits(spark: SparkSession) -> None:
    entries = journal_frame(
        spark,
        loans=[lf.loan(2, MON, "450.00")],
        payments=[lf.payment(11, 1, MON, 1, "97.00", "3.00"), lf.payment(12, 1, MON, 1, "3.00", reversed_=True)],
        refunds=[lf.refund(21, 2, MON, "50.00")],
        charge_offs=[lf.charge_off(3, MON, "280.00", "7.35")],
        recoveries=[lf.recovery(31, 4, MON, "12.34")],
        book=[
            open_loan(1, status="delinquent", schedule=[lf.installment(1, 1, MON, "100.00", "3.00", effective=FRI)]),
            open_loan(2, schedule=[lf.installment(2, 1, SAT, "150.00", "4.56", effective=FRI)]),
        ],
    )
    totals: dict[str, list[Decimal]] = {}
    for row in entries.collect():
        debits_credits = totals.setdefault(row["entry_id"], [ZERO, ZERO])
        debits_credits[0] += row["debit"]
        debits_credits[1] += row["credit"]
    assert totals == {
        "orig-2": [Decimal("450.00")] * 2,
        "accr-1-1": [Decimal("3.00")] * 2,
        "accr-2-1": [Decimal("4.56")] * 2,
        "pay-11": [Decimal("100.00")] * 2,
        "ref-21": [Decimal("50.00")] * 2,
        "co-3": [Decimal("287.35")] * 2,
        "rec-31": [Decimal("12.34")] * 2,
    }
    outcomes = {audit.name: audit.evaluate(entries) for audit in LEDGER_AUDITS}
    assert {name: outcome.passed for name, outcome in outcomes.items()} == {
        "entries_balance": True,
        "ledger_balances": True,
    }
    assert outcomes["ledger_balances"].metadata == {"debits": "907.25", "credits": "907.25"}


def test_the_ledger_audits_fail_a_journal_entry_off_by_a_cent(spark: SparkSession) -> None:
    entries = journal_frame(spark, refunds=[lf.refund(21, 2, MON, "50.00")])
    stray_cent = lf.frame(
        spark,
        CORE_LEDGER_ENTRIES,
        [
            {
                PARTITION: MON,
                "entry_id": "ref-21",
                "event_type": "refund",
                "event_date": MON,
                "loan_id": 2,
                "account": "loans_receivable",
                "debit": ZERO,
                "credit": Decimal("0.01"),
            }
        ],
    )
    outcomes = {audit.name: audit.evaluate(entries.unionByName(stray_cent)) for audit in LEDGER_AUDITS}
    assert {name: (outcome.passed, outcome.failing_rows) for name, outcome in outcomes.items()} == {
        "entries_balance": (False, 1),
        "ledger_balances": (False, 1),
    }


# -- interest accrual windows --------------------------------------------------------------------------------


def accrued(
    spark: SparkSession,
    days: list[date],
    book: list[dict[str, Any]],
    previous_book: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> list[tuple[Any, ...]]:
    keys = [d.isoformat() for d in days]
    frame = interest_accruals(spark, keys, lf.book(spark, *book), lf.book(spark, *previous_book))
    return sorted(
        (r[PARTITION], r["loan_id"], r["installment_number"], r["due_date"], r["interest"]) for r in frame.collect()
    )


def due_daily(loan_id: int, first: date, last: date) -> list[dict[str, Any]]:
    """An installment of loan ``loan_id`` due every calendar day from ``first`` to ``last``; interest 0.01 x n."""
    days = [date.fromordinal(o) for o in range(first.toordinal(), last.toordinal() + 1)]
    return [
        lf.installment(loan_id, n, day, "10.00", f"0.{n:02d}", effective=first) for n, day in enumerate(days, start=1)
    ]


@pytest.mark.parametrize(
    ("day", "window"),
    [
        # A Tuesday: the window is the day itself.
        (TUE, [TUE]),
        # A Monday: the weekend since Friday's drop.
        (MON, [SAT, date(2023, 4, 16), MON]),
        # The day after Independence Day (Tuesday 2023-07-04): Monday's drop was the last.
        (date(2023, 7, 5), [date(2023, 7, 4), date(2023, 7, 5)]),
        # The Tuesday after Juneteenth (Monday 2023-06-19): the weekend and the holiday since Friday's drop.
        (date(2023, 6, 20), [date(2023, 6, 17), date(2023, 6, 18), date(2023, 6, 19), date(2023, 6, 20)]),
    ],
)
def test_interest_accrues_for_the_installments_falling_due_since_the_previous_business_days_drop(
    spark: SparkSession, day: date, window: list[date]
) -> None:
    # Installments fall due every day from a week before to two days after.
    schedule = due_daily(1, date.fromordinal(day.toordinal() - 7), date.fromordinal(day.toordinal() + 2))
    accruals = accrued(spark, [day], [open_loan(1, day, schedule=schedule)])
    assert [(due, accrued_on) for accrued_on, _, _, due, _ in accruals] == [(d, day) for d in window]
    by_due = {row["due_date"]: (row["installment_number"], row["interest"]) for row in schedule}
    assert [(number, interest) for _, _, number, _, interest in accruals] == [by_due[d] for d in window]


def test_interest_accrues_only_for_loans_open_when_the_day_began(spark: SparkSession) -> None:
    statuses = {1: "current", 2: "delinquent", 3: "paid_off", 4: "cancelled", 5: "charged_off"}

    def due_monday(loan_id: int) -> list[dict[str, Any]]:
        return [lf.installment(loan_id, 1, MON, "100.00", "3.00", effective=FRI)]

    book = [open_loan(i, status=status, schedule=due_monday(i)) for i, status in statuses.items()]  # not loan 6
    friday = [open_loan(i, day=FRI, status=status, schedule=due_monday(i)) for i, status in statuses.items()]
    # Loan 7 was current on Friday and is paid off on Monday; loan 8 was charged off during Monday.
    book += [open_loan(7, status="paid_off", schedule=due_monday(7)), open_loan(8, status="charged_off")]
    friday += [open_loan(7, day=FRI), open_loan(8, day=FRI, status="delinquent")]
    assert accrued(spark, [MON], book, friday) == [
        (MON, 1, 1, MON, Decimal("3.00")),
        (MON, 2, 1, MON, Decimal("3.00")),
        (MON, 7, 1, MON, Decimal("3.00")),
    ]


def test_interest_accrues_under_the_schedule_version_each_days_book_carries(spark: SparkSession) -> None:
    def version(number: int, effective: date, first: str, second: str) -> list[dict[str, Any]]:
        return [
            lf.installment(1, 1, MON, "100.00", first, version=number, effective=effective),
            lf.installment(1, 2, TUE, "100.00", second, version=number, effective=effective),
        ]

    # Monday's book carries version 2 (version 3 is not in force yet), Tuesday's version 3.
    book = [
        open_loan(1, MON, schedule=version(2, MON, "2.50", "1.50")),
        open_loan(1, TUE, schedule=version(3, TUE, "2.40", "1.40")),
    ]
    assert accrued(spark, [MON, TUE], book) == [
        (MON, 1, 1, MON, Decimal("2.50")),
        (TUE, 1, 2, TUE, Decimal("1.40")),
    ]


def test_the_last_installment_paid_on_its_due_date_accrues_its_interest_before_the_payment_settles_it(
    spark: SparkSession,
) -> None:
    lines = journal(
        spark,
        payments=[lf.payment(13, 1, MON, 3, "100.00", "1.00", due=MON)],
        book=[
            open_loan(
                1,
                status="paid_off",
                schedule=[lf.installment(1, 3, MON, "100.00", "1.00", effective=FRI)],
                repaid="300.00",
                interest_paid="6.00",
            )
        ],
        previous_book=[open_loan(1, day=FRI, repaid="200.00", interest_paid="5.00")],
    )
    receivable = [(debit, credit) for _, _, _, _, account, debit, credit in lines if account == "interest_receivable"]
    income = [credit for _, _, _, _, account, _, credit in lines if account == "interest_income"]
    # The installment's 1.00 of interest is income, and the payment settles a receivable that was accrued.
    assert (sum(income, ZERO), sum(d - c for d, c in receivable)) == (Decimal("1.00"), ZERO)


def test_a_book_without_carried_installments_fails_the_ledger_naming_the_loan(spark: SparkSession) -> None:
    # A book written before the book carried installments: its interest accruals are unknown, not zero.
    old_row = lf.book_row(1, MON, "300.00", origination_date=SAT)
    with pytest.raises(PySparkException, match="core/ledger_entries: loan 1 on 2023-04-17: the day's book has no"):
        accrued(spark, [MON], [old_row])
