"""Partitioning conventions: daily partitions keyed by ISO date, in the business time zone."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from batch_platform.business_calendar import BusinessCalendar

BUSINESS_TIMEZONE = "UTC"
WEEKDAYS = BusinessCalendar()  # Monday to Friday, no holidays


def daily_partitions(
    start_date: str, *, timezone: str = BUSINESS_TIMEZONE, end_offset: int = 0
) -> dg.DailyPartitionsDefinition:
    """Daily partitions with ISO date keys (the lake's partition values); end_offset=1 includes today."""
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone=timezone, end_offset=end_offset, fmt="%Y-%m-%d")


def partition_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The partition keys of this step: one for a single partition run, many for a range (backfill) run."""
    if context.has_partition_key_range or context.has_partition_key:
        return list(context.partition_keys)
    return []


def business_day_partitions(
    start_date: str,
    *,
    timezone: str = BUSINESS_TIMEZONE,
    end_offset: int = 0,
    calendar: BusinessCalendar = WEEKDAYS,
) -> dg.TimeWindowPartitionsDefinition:
    """One partition per business day of ``calendar`` (default: Monday to Friday, no holidays), keyed by ISO date.

    A business day's window runs to the next working weekday's midnight (Friday's to Monday's). ``end_offset=1``
    makes the day whose window is still open a partition, for data that lands the evening of its business day.
    The calendar's holidays are no partitions (see ``BusinessCalendar.partitions_def``).

    The previous partition of a business day (``TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)``) is
    the previous business day, which is what day-chained assets (a balance carried from yesterday) depend on.
    """
    return calendar.partitions_def(start_date, timezone=timezone, end_offset=end_offset)


def in_writes_of(keys: Sequence[str], size: int | None) -> list[list[str]]:
    """A step's partition keys in order, in consecutive groups of at most ``size`` (one group if None): the writes
    of a run that covers more partitions than one write should hold in memory."""
    ordered = sorted(keys)
    step = size or len(ordered) or 1
    return [ordered[i : i + step] for i in range(0, len(ordered), step)] or [[]]
