"""One walk of the calendar gives the dates Dagster's partition-by-partition stepping gives, on the lender's calendar
(weekends and bank holidays) and on a plain daily one, from aligned and unaligned times, both directions."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import pytest
from dagster._core.definitions.partitions.mapping import time_window as time_window_mapping

from assets.lending.tables import LENDING_PARTITIONS
from batch_platform.inputs import HISTORY_PARTITIONS, up_to_this_partition
from batch_platform.partition_offsets import (
    dagsters_offsetted_datetime,
    install_fast_partition_offsets,
    offsetted_datetime,
)

OFFSETS = [-HISTORY_PARTITIONS, -300, -23, -5, -2, -1, 0, 1, 2, 5, 23, 300]


def _starts(partitions: dg.TimeWindowPartitionsDefinition) -> list[datetime]:
    """Window starts around the lender's holidays and weekends, and times inside windows and on excluded days."""
    keys = partitions.get_partition_keys()
    picked = [keys[0], keys[1], keys[len(keys) // 2], keys[-2], keys[-1], *keys[8:20]]  # 2023-01-16 is a holiday
    starts = [partitions.time_window_for_partition_key(key).start for key in picked]
    first = starts[0]
    return starts + [first + timedelta(hours=h) for h in (5, 30, 13 * 24, 13 * 24 + 7, 5 * 24 + 12)]


@pytest.mark.parametrize("offset", OFFSETS)
def test_one_walk_lands_where_dagsters_steps_land_on_the_lending_calendar(offset: int) -> None:
    for start in _starts(LENDING_PARTITIONS):
        expected = dagsters_offsetted_datetime(LENDING_PARTITIONS, start, offset)
        assert offsetted_datetime(LENDING_PARTITIONS, start, offset) == expected, (start, offset)


def test_a_plain_daily_calendar_keeps_dagsters_constant_time_path() -> None:
    daily = dg.DailyPartitionsDefinition(start_date="2023-01-01")
    start = daily.time_window_for_partition_key("2023-06-15").start
    for offset in OFFSETS:
        assert offsetted_datetime(daily, start, offset) == dagsters_offsetted_datetime(daily, start, offset)


def test_the_history_window_maps_to_the_same_partitions_once_installed() -> None:
    mapping = up_to_this_partition().partition_mapping()
    keys = LENDING_PARTITIONS.get_partition_keys()
    step = LENDING_PARTITIONS.empty_subset().with_partition_keys(keys[300:323])
    restated = LENDING_PARTITIONS.empty_subset().with_partition_keys([keys[400]])

    def mapped() -> tuple[list[str], list[str]]:
        upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
            step, LENDING_PARTITIONS, LENDING_PARTITIONS
        ).partitions_subset
        downstream = mapping.get_downstream_partitions_for_partitions(restated, LENDING_PARTITIONS, LENDING_PARTITIONS)
        return sorted(upstream.get_partition_keys()), sorted(downstream.get_partition_keys())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time_window_mapping, "_offsetted_datetime", dagsters_offsetted_datetime)
        by_steps = mapped()
    install_fast_partition_offsets()
    assert time_window_mapping._offsetted_datetime is offsetted_datetime
    assert mapped() == by_steps
    assert by_steps[0] == keys[:323] and by_steps[1] == keys[400:]
