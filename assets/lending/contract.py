"""The landing contract: what the producer delivers and the lender's business rules, in one place.

The raw load checks drops against it and the simulator writes drops by it; neither defines its own copy. Here:
the datasets and their Arrow schemas, each dataset's event date and key order, the rule of every dated field, the
vocabularies of coded columns, the business constants (the APR cap, the money type) and the business calendar
with the window of days a drop carries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from enum import StrEnum

import pyarrow as pa

from batch_platform.business_calendar import BusinessCalendar, federal_reserve_holidays

# ---------------------------------------------------------------------------------------------------------------
# Business constants

# The lender's first business day (2023-01-02, a Monday, was New Year's Day observed: no settlement).
LENDING_START = "2023-01-03"
MAX_APR_BPS = 3600  # the lender's legal APR cap, 36%
MONEY = pa.decimal128(18, 2)  # money from core on; landing and raw carry integer cents
MONEY_SQL = f"decimal({MONEY.precision},{MONEY.scale})"

# ---------------------------------------------------------------------------------------------------------------
# Business calendar

# The lender's business calendar: US banks settle no ACH payments on Federal Reserve holidays, so no drop lands for
# one; the next business day's drop carries its events, as Monday's carries the weekend's.
LENDING_CALENDAR = BusinessCalendar(federal_reserve_holidays)


def is_business_day(day: date) -> bool:
    """Monday to Friday, except Federal Reserve holidays."""
    return LENDING_CALENDAR.is_business_day(day)


def business_days(first: date, last: date) -> Iterator[date]:
    return LENDING_CALENDAR.business_days(first, last)


def previous_business_day(day: date) -> date:
    return LENDING_CALENDAR.previous_business_day(day)


def drop_window(business_date: date, lender_start: date) -> tuple[date, date]:
    """The calendar days whose events the business date's drop carries: after the previous business day (so the
    weekend's and a holiday's events come with the next business day's drop), from the lender's first day on.

    The contract both sides keep: the simulator writes drops by it and the raw load checks dates against it."""
    if not is_business_day(business_date):
        raise ValueError(f"{business_date} is not a business day (a weekend or a Federal Reserve holiday): no drop")
    if business_date < lender_start:
        raise ValueError(f"{business_date} is before the simulated lender's start {lender_start}")
    return max(previous_business_day(business_date) + timedelta(days=1), lender_start), business_date


# ---------------------------------------------------------------------------------------------------------------
# Datasets

DATASETS = (
    "customers",
    "merchants",
    "applications",
    "loans",
    "repayment_schedule",
    "payments",
    "refunds",
    "charge_offs",
    "recoveries",
)


def _f(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


_DATE, _ID, _CENTS, _INT = pa.date32(), pa.int64(), pa.int64(), pa.int32()
SCHEMAS: dict[str, pa.Schema] = {
    "customers": pa.schema(
        [
            _f("customer_id", _ID),
            _f("created_date", _DATE),
            _f("first_name", pa.string()),
            _f("last_name", pa.string()),
            _f("email", pa.string()),
            _f("phone", pa.string()),
            _f("date_of_birth", _DATE),
            _f("national_id", pa.string()),
            _f("street_address", pa.string()),
            _f("city", pa.string()),
            _f("state", pa.string()),
            _f("postal_code", pa.string()),
        ]
    ),
    "merchants": pa.schema(
        [
            _f("merchant_id", _ID),
            _f("onboarded_date", _DATE),
            _f("merchant_name", pa.string()),
            _f("category", pa.string()),
            _f("region", pa.string()),
            _f("state", pa.string()),
            _f("city", pa.string()),
        ]
    ),
    "applications": pa.schema(
        [
            _f("application_id", _ID),
            _f("application_date", _DATE),
            _f("applied_at", pa.timestamp("us", tz="UTC")),
            _f("customer_id", _ID),
            _f("merchant_id", _ID),
            _f("requested_amount_cents", _CENTS),
            _f("term_months", _INT),
            _f("credit_score", _INT),
            _f("risk_band", pa.string()),
            _f("decision", pa.string()),
            _f("decline_reason", pa.string(), nullable=True),
            _f("offered_apr_bps", _INT, nullable=True),
        ]
    ),
    "loans": pa.schema(
        [
            _f("loan_id", _ID),
            _f("application_id", _ID),
            _f("customer_id", _ID),
            _f("merchant_id", _ID),
            _f("origination_date", _DATE),
            _f("principal_cents", _CENTS),
            _f("term_months", _INT),
            _f("apr_bps", _INT),
            _f("is_zero_apr_promo", pa.bool_()),
            _f("risk_band", pa.string()),
            _f("installment_cents", _CENTS),
            _f("total_interest_cents", _CENTS),
            _f("first_due_date", _DATE),
            _f("maturity_date", _DATE),
        ]
    ),
    "repayment_schedule": pa.schema(
        [
            _f("loan_id", _ID),
            _f("schedule_version", _INT),
            _f("effective_date", _DATE),
            _f("installment_number", _INT),
            _f("due_date", _DATE),
            _f("installment_cents", _CENTS),
            _f("principal_cents", _CENTS),
            _f("interest_cents", _CENTS),
            _f("balance_after_cents", _CENTS),
        ]
    ),
    "payments": pa.schema(
        [
            _f("payment_id", _ID),
            _f("loan_id", _ID),
            _f("payment_date", _DATE),
            _f("installment_number", _INT),
            _f("due_date", _DATE),
            _f("payment_status", pa.string()),
            _f("days_late", _INT),
            _f("amount_cents", _CENTS),
            _f("principal_cents", _CENTS),
            _f("interest_cents", _CENTS),
            _f("reversed", pa.bool_()),
            _f("reversal_reason", pa.string(), nullable=True),
        ]
    ),
    "refunds": pa.schema(
        [
            _f("refund_id", _ID),
            _f("loan_id", _ID),
            _f("merchant_id", _ID),
            _f("refund_date", _DATE),
            _f("refund_type", pa.string()),
            _f("reason", pa.string()),
            _f("amount_cents", _CENTS),
        ]
    ),
    "charge_offs": pa.schema(
        [
            _f("loan_id", _ID),
            _f("charge_off_date", _DATE),
            _f("days_past_due", _INT),
            _f("oldest_unpaid_installment", _INT),
            _f("oldest_unpaid_due_date", _DATE),
            _f("principal_cents", _CENTS),
            _f("interest_cents", _CENTS),
        ]
    ),
    "recoveries": pa.schema(
        [
            _f("recovery_id", _ID),
            _f("loan_id", _ID),
            _f("recovery_date", _DATE),
            _f("channel", pa.string()),
            _f("amount_cents", _CENTS),
        ]
    ),
}

# The day an event belongs to (a drop carries the rows whose event date it covers) and the row order within it.
EVENT_DATE_COLUMN = {
    "customers": "created_date",
    "merchants": "onboarded_date",
    "applications": "application_date",
    "loans": "origination_date",
    "repayment_schedule": "effective_date",
    "payments": "payment_date",
    "refunds": "refund_date",
    "charge_offs": "charge_off_date",
    "recoveries": "recovery_date",
}


class DateRule(StrEnum):
    """How a dated field of a drop must relate to the drop; the raw load quarantines a row that breaks it."""

    # The event the row records: after the previous business day's drop, up to this business day (drop_window).
    IN_WINDOW = "in_window"
    # An earlier event of the lender's own book the row refers to: from the lender's first day to this business day.
    BOOK_PAST = "book_past"
    # A fact older than the lender (a birth date): never after the business day, no lower bound.
    NOT_AFTER_DROP = "not_after_drop"
    # A planned date (due dates, maturity), legitimately in the future: from the lender's first day to the longest
    # term (MAX_TERM_MONTHS) after the business day.
    SCHEDULED = "scheduled"


# Every date and timestamp field of SCHEMAS, with its rule (tests check none is missing). A timestamp is judged by
# its UTC date, which is the day the simulator stamps it on.
DATE_FIELDS: dict[str, dict[str, DateRule]] = {
    "customers": {"created_date": DateRule.IN_WINDOW, "date_of_birth": DateRule.NOT_AFTER_DROP},
    "merchants": {"onboarded_date": DateRule.IN_WINDOW},
    "applications": {"application_date": DateRule.IN_WINDOW, "applied_at": DateRule.IN_WINDOW},
    "loans": {
        "origination_date": DateRule.IN_WINDOW,
        "first_due_date": DateRule.SCHEDULED,
        "maturity_date": DateRule.SCHEDULED,
    },
    # A schedule becomes effective with its event (origination or partial refund); its due dates lie ahead.
    "repayment_schedule": {"effective_date": DateRule.IN_WINDOW, "due_date": DateRule.SCHEDULED},
    # A payoff names the next due date, which may be after the payment: scheduled, not past.
    "payments": {"payment_date": DateRule.IN_WINDOW, "due_date": DateRule.SCHEDULED},
    "refunds": {"refund_date": DateRule.IN_WINDOW},
    "charge_offs": {"charge_off_date": DateRule.IN_WINDOW, "oldest_unpaid_due_date": DateRule.BOOK_PAST},
    "recoveries": {"recovery_date": DateRule.IN_WINDOW},
}
ROW_ORDER = {
    "customers": ("customer_id",),
    "merchants": ("merchant_id",),
    "applications": ("application_id",),
    "loans": ("loan_id",),
    "repayment_schedule": ("loan_id", "schedule_version", "installment_number"),
    "payments": ("payment_id",),
    "refunds": ("refund_id",),
    "charge_offs": ("loan_id",),
    "recoveries": ("recovery_id",),
}

# ---------------------------------------------------------------------------------------------------------------
# Vocabularies (string columns are built from integer codes into these)

RISK_BANDS = ("A", "B", "C", "D", "E")
DECISIONS = ("approved", "declined")
DECLINE_REASONS = (
    "credit_score_too_low",
    "debt_to_income_too_high",
    "insufficient_credit_history",
    "fraud_check_failed",
    "amount_exceeds_limit",
)
PAYMENT_STATUSES = ("on_time", "partial", "late", "missed", "prepaid")
ON_TIME, PARTIAL, LATE, MISSED, PREPAID = range(len(PAYMENT_STATUSES))
REVERSAL_REASONS = ("ach_return", "duplicate_payment", "customer_dispute")
REFUND_TYPES = ("full", "partial")
REFUND_REASONS = ("returned_goods", "order_cancelled", "partial_return", "price_adjustment")
RECOVERY_CHANNELS = ("collection_agency", "borrower_settlement", "debt_sale")
CATEGORIES = (
    "electronics",
    "furniture",
    "home_improvement",
    "travel",
    "apparel",
    "health_and_dental",
    "sporting_goods",
    "jewelry",
)
REGIONS = ("Northeast", "Midwest", "South", "West")

VOCABULARIES: dict[tuple[str, str], Sequence[str]] = {
    ("merchants", "category"): CATEGORIES,
    ("applications", "risk_band"): RISK_BANDS,
    ("applications", "decision"): DECISIONS,
    ("applications", "decline_reason"): DECLINE_REASONS,
    ("loans", "risk_band"): RISK_BANDS,
    ("payments", "payment_status"): PAYMENT_STATUSES,
    ("payments", "reversal_reason"): REVERSAL_REASONS,
    ("refunds", "refund_type"): REFUND_TYPES,
    ("refunds", "reason"): REFUND_REASONS,
    ("recoveries", "channel"): RECOVERY_CHANNELS,
}
