"""Offsetting a date across a business calendar in one walk, not one walk per partition.

Dagster maps a partition through ``TimeWindowPartitionMapping(start_offset=-n)`` by stepping back one partition at a
time (``dagster._core.definitions.partitions.mapping.time_window._offsetted_datetime``), and on a calendar that is
not plain daily (weekdays, holiday exclusions) each step starts a new window iterator that re-sorts every holiday.
The lake's "every partition up to this one" reads reach back ``batch_platform.inputs.HISTORY_PARTITIONS`` partitions,
so one mapping costs 0.13-0.45 s, and the backfill daemon maps hundreds per tick: the first tick of a 10-day lending
backfill took about 100 s on the 2-core machine, the tests that drive the daemon spent most of their time there.

Walking the same iterator |offset| windows gives the same date (the window iterators are contiguous, excluded
windows skipped alike; tests/test_partition_offsets.py compares both on the lending calendar) at the cost of one
walk. Installed in every process that evaluates the lake's mappings: the code location's (``batch_platform.inputs``
imports it) and the daemon's and webserver's (the run coordinator, ``batch_platform.compute``).
"""

from __future__ import annotations

import itertools
from datetime import datetime

import dagster as dg
from dagster._core.definitions.partitions.mapping import time_window as time_window_mapping

# Dagster's own stepping, captured before any install: the fast path delegates to it, tests compare with it.
dagsters_offsetted_datetime = time_window_mapping._offsetted_datetime


def offsetted_datetime(partitions_def: dg.TimeWindowPartitionsDefinition, dt: datetime, offset: int) -> datetime:
    """The start of the partition ``-offset`` partitions before ``dt`` (offset < 0), or the end of the one
    ``offset`` partitions after it: what Dagster's stepping computes, in one walk of the calendar."""
    if offset == 0 or partitions_def.is_basic_daily or partitions_def.is_basic_hourly:
        return dagsters_offsetted_datetime(partitions_def, dt, offset)  # already constant time
    if offset < 0:
        earlier = partitions_def._reverse_iterate_time_windows(dt.timestamp())
        return next(itertools.islice(earlier, -offset - 1, None)).start
    later = partitions_def._iterate_time_windows(dt.timestamp())
    return next(itertools.islice(later, offset - 1, None)).end


def install_fast_partition_offsets() -> None:
    """Make this process's time window mappings offset in one walk (idempotent)."""
    time_window_mapping._offsetted_datetime = offsetted_datetime
