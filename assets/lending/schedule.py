"""Amortization arithmetic for the lending world (the business calendar is the landing contract's).

Days are integers (days since 1970-01-01, the Parquet ``date32`` value) so that whole cohorts move through numpy
at once. Money is integer cents. The amortization uses only IEEE basic operations (+, -, *, /, floor), which are
correctly rounded everywhere; the one non-trivial quantity, the annuity factor, is computed exactly with
fractions and rounded once. So a schedule does not depend on the platform's ``pow``.
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

EPOCH = date(1970, 1, 1)
TERMS_MONTHS = (3, 6, 12, 24)
MAX_TERM_MONTHS = max(TERMS_MONTHS)
# A monthly rate is APR / 12; APR is in basis points, so the monthly rate is apr_bps / (12 * 10_000).
_MONTHLY_RATE_DENOMINATOR = 120_000


def epoch_day(day: date) -> int:
    return (day - EPOCH).days


def from_epoch_day(days: int) -> date:
    return EPOCH + timedelta(days=int(days))


def add_months(day: date, months: int) -> date:
    """The same day of the month ``months`` later, clamped to the month's last day (Jan 31 + 1 month = Feb 28/29)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@functools.lru_cache(maxsize=4096)
def _due_dates(origination_day: int) -> tuple[int, ...]:
    origination = from_epoch_day(origination_day)
    return tuple(epoch_day(add_months(origination, k)) for k in range(MAX_TERM_MONTHS + 1))


def due_dates(origination_day: int) -> IntArray:
    """Epoch days of due dates 0..24 of a loan originated on ``origination_day`` (index 0 is origination)."""
    return np.array(_due_dates(origination_day), dtype=np.int64)


def month_end(days: IntArray) -> IntArray:
    """The last day of the month of each epoch day."""
    months = days.astype("datetime64[D]").astype("datetime64[M]")
    return ((months + 1).astype("datetime64[D]") - np.timedelta64(1, "D")).astype(np.int64)


@functools.cache
def annuity_factor(apr_bps: int, term_months: int) -> float:
    """Installment per unit of principal: r / (1 - (1 + r)^-n), exact, then rounded once to a float."""
    if apr_bps == 0:
        return float(Fraction(1, term_months))
    rate = Fraction(apr_bps, _MONTHLY_RATE_DENOMINATOR)
    return float(rate / (1 - (1 + rate) ** -term_months))


def annuity_factors(apr_bps: npt.NDArray[np.integer], term_months: npt.NDArray[np.integer]) -> FloatArray:
    keys = apr_bps.astype(np.int64) * 100 + term_months.astype(np.int64)
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    table = np.array([annuity_factor(int(key // 100), int(key % 100)) for key in unique_keys], dtype=np.float64)
    return table[inverse.reshape(-1)]


def round_half_up(values: npt.NDArray[Any]) -> IntArray:
    return np.floor(values + 0.5).astype(np.int64)


def monthly_rate(apr_bps: npt.NDArray[np.integer]) -> FloatArray:
    return apr_bps.astype(np.float64) / _MONTHLY_RATE_DENOMINATOR


@dataclass(frozen=True)
class Amortization:
    """Equal-installment monthly schedules, one row per loan, one column per installment (zero past the term).

    Installment k charges round(balance * monthly rate) interest; the rest of the regular installment repays
    principal. The last installment repays whatever principal is left, so principal parts sum to the principal
    exactly and the last installment absorbs the rounding.
    """

    installment: IntArray
    principal: IntArray
    interest: IntArray
    balance_after: IntArray

    @property
    def regular_installment(self) -> IntArray:
        return self.installment[:, 0]

    def balance_before(self, installment_number: IntArray, rows: IntArray | None = None) -> IntArray:
        """Principal outstanding just before ``installment_number`` falls due (the principal, for the first)."""
        rows = np.arange(len(installment_number)) if rows is None else rows
        opening = self.balance_after[rows, 0] + self.principal[rows, 0]
        previous = np.maximum(installment_number - 2, 0)
        return np.where(installment_number <= 1, opening, self.balance_after[rows, previous])


def amortize(
    principal_cents: IntArray,
    apr_bps: npt.NDArray[np.integer],
    term_months: npt.NDArray[np.integer],
    through: int | None = None,
) -> Amortization:
    """Schedules for the loans; with ``through``, installments after that number are left at zero (not computed)."""
    count = len(principal_cents)
    shape = (count, MAX_TERM_MONTHS)
    installment = np.zeros(shape, dtype=np.int64)
    principal_part = np.zeros(shape, dtype=np.int64)
    interest_part = np.zeros(shape, dtype=np.int64)
    balance_after = np.zeros(shape, dtype=np.int64)
    if count == 0:
        return Amortization(installment, principal_part, interest_part, balance_after)
    rate = monthly_rate(apr_bps)
    terms = term_months.astype(np.int64)
    regular = round_half_up(principal_cents.astype(np.float64) * annuity_factors(apr_bps, terms))
    balance = principal_cents.astype(np.int64).copy()
    last = int(terms.max()) if through is None else min(int(terms.max()), through)
    for k in range(1, last + 1):
        due = terms >= k
        interest = np.where(due, round_half_up(balance.astype(np.float64) * rate), 0)
        # Regular installments never repay more than is owed; the last repays exactly what is left.
        repaid = np.where(terms == k, balance, np.minimum(np.maximum(regular - interest, 0), balance))
        repaid = np.where(due, repaid, 0)
        balance = balance - repaid
        column = k - 1
        interest_part[:, column] = interest
        principal_part[:, column] = repaid
        installment[:, column] = interest + repaid
        balance_after[:, column] = np.where(due, balance, 0)
    return Amortization(installment, principal_part, interest_part, balance_after)
