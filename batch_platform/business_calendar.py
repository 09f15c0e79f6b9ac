"""Business calendars: which days a business works, from weekdays, a holiday source and explicit closures.

A ``BusinessCalendar`` knows nothing of any domain: a bank, an exchange or a warehouse passes its own working
weekdays and holidays. Holidays come from the ``holidays`` library (``financial_holidays("XFED")`` is the Federal
Reserve's, on which US banks settle no ACH payments) or from any function of the years; closures add one-off days
(a day of mourning, a systems freeze).

The calendar covers a bounded range of years and refuses days outside it: holiday rules change (Juneteenth became a
Federal Reserve holiday in 2022), so a calendar that silently treated a far-future holiday as a working day would be
wrong without anyone noticing. Its partitions end with its last year for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta

import dagster as dg
import holidays as holidays_lib

# The years a calendar covers unless told otherwise: far enough back for any history, far enough ahead that no
# partition of a running pipeline reaches the end (a test guards that it stays so).
DEFAULT_YEARS = range(2000, 2051)
MONDAY_TO_FRIDAY = frozenset(range(5))  # date.weekday(): Monday is 0

HolidaySource = Callable[[range], Iterable[date]]


def financial_market_holidays(market: str) -> HolidaySource:
    """The holidays of a financial market or central bank, by its code in the ``holidays`` library ("XFED",
    "XNYS", "XECB", ...); observed days included (a Sunday holiday observed on Monday closes the Monday)."""

    def source(years: range) -> Iterable[date]:
        return holidays_lib.financial_holidays(market, years=years).keys()

    return source


def federal_reserve_holidays(years: range) -> Iterable[date]:
    """The Federal Reserve's holidays ("XFED"): the days US banks settle no ACH or wire payments."""
    # The class itself: financial_holidays("XFED") resolves the market through the library's lazy registry, which
    # cost about 2 s of the code location's load on first use; this import costs nothing more.
    from holidays.financial.federal_reserve import FederalReserve

    return FederalReserve(years=years).keys()


class BusinessCalendar:
    """Working days: the given weekdays, minus the holiday source's days and the explicit closures.

    ``years`` bounds the calendar; asking about a day outside it raises ``ValueError``.
    """

    def __init__(
        self,
        holidays: HolidaySource | None = None,
        *,
        weekdays: Iterable[int] = MONDAY_TO_FRIDAY,
        closures: Iterable[date] = (),
        years: range = DEFAULT_YEARS,
    ) -> None:
        self.weekdays = frozenset(weekdays)
        if not self.weekdays or not self.weekdays <= set(range(7)):
            raise ValueError(f"weekdays must be some of 0 (Monday) to 6 (Sunday), not {sorted(self.weekdays)}")
        if len(years) == 0 or years.step != 1:
            raise ValueError(f"years must be a non-empty range of consecutive years, not {years}")
        self.years = years
        self.first_day = date(years[0], 1, 1)
        self.last_day = date(years[-1], 12, 31)
        closed = {d for d in (holidays(years) if holidays else ()) if d.year in years}
        extra = set(closures)
        if outside := sorted(d for d in extra if d.year not in years):
            raise ValueError(f"closures {outside} are outside the calendar's years {years[0]}..{years[-1]}")
        # Only closures that fall on a working weekday matter: a Saturday holiday closes nothing more.
        self.holidays: frozenset[date] = frozenset(d for d in closed | extra if d.weekday() in self.weekdays)

    def __repr__(self) -> str:
        weekdays = ",".join(str(d) for d in sorted(self.weekdays))
        return (
            f"BusinessCalendar(weekdays={weekdays}, years={self.years[0]}..{self.years[-1]}, "
            f"{len(self.holidays)} holidays on working weekdays)"
        )

    def _check(self, day: date) -> None:
        if not self.first_day <= day <= self.last_day:
            raise ValueError(f"{day} is outside the business calendar's years {self.years[0]}..{self.years[-1]}")

    def is_business_day(self, day: date) -> bool:
        self._check(day)
        return day.weekday() in self.weekdays and day not in self.holidays

    def is_holiday(self, day: date) -> bool:
        """A working weekday on which the business is closed (weekends are not holidays)."""
        self._check(day)
        return day in self.holidays

    def previous_business_day(self, day: date) -> date:
        """The last business day strictly before ``day``."""
        day -= timedelta(days=1)
        while not self.is_business_day(day):
            day -= timedelta(days=1)
        return day

    def next_business_day(self, day: date) -> date:
        """The first business day strictly after ``day``."""
        day += timedelta(days=1)
        while not self.is_business_day(day):
            day += timedelta(days=1)
        return day

    def business_days(self, first: date, last: date) -> Iterator[date]:
        """The business days in [first, last], in order."""
        day = first
        while day <= last:
            if self.is_business_day(day):
                yield day
            day += timedelta(days=1)

    def holidays_between(self, first: date, last: date) -> list[date]:
        """The holidays on working weekdays in [first, last], in order."""
        return sorted(d for d in self.holidays if first <= d <= last)

    def partitions_def(
        self, start: str, *, timezone: str = "UTC", end_offset: int = 0, fmt: str = "%Y-%m-%d"
    ) -> dg.TimeWindowPartitionsDefinition:
        """One partition per business day from ``start`` (itself a business day) to the calendar's last year.

        Partitions tick at midnight of every working weekday in ``timezone``, with the holidays as Dagster
        ``exclusions`` (midnight in that time zone), so a holiday is no partition. A business day's window ends at
        the next working weekday's midnight: Friday's runs to Monday, and the window before a holiday ends where the
        holiday begins (the holiday's own window is excluded). ``TimeWindowPartitionMapping(start_offset=-1,
        end_offset=-1)`` maps a day to the previous business day, across weekends and holidays alike.
        """
        first = datetime.strptime(start, fmt).date()
        if not self.is_business_day(first):
            raise ValueError(f"the first partition {start} is not a business day of {self}")
        # Cron counts Sunday as 0, date.weekday() counts Monday as 0.
        cron_days = ",".join(str((d + 1) % 7) for d in sorted(self.weekdays))
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule=f"0 0 * * {cron_days}",
            start=start,
            end=datetime(self.years[-1] + 1, 1, 1),  # naive: Dagster reads it in the partitions' time zone
            timezone=timezone,
            fmt=fmt,
            end_offset=end_offset,
            exclusions=[datetime(d.year, d.month, d.day) for d in self.holidays_between(first, self.last_day)],
        )
