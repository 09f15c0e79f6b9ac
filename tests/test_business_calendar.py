"""The lender's business calendar: Federal Reserve holidays are not business days, end to end.

The calendar itself (``batch_platform.business_calendar``), then a window of ten business days around Independence
Day 2023 (Tuesday 2023-07-04, a Federal Reserve holiday): the simulator lands no drop for the holiday and the next
drop carries its events, the partitions skip it, the deadline schedule and the sensors never wait for it, and the
loan book carries its balances from 2023-07-03 to 2023-07-05 (on real Spark and Iceberg).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster._utils.schedules import schedule_execution_time_iterator
from lending_automation import (
    PIPELINE_KEYS,
    LendingAutomation,
    backfill_targets,
    single_run_request,
)
from pyspark.sql import SparkSession

from assets.lending.contract import LENDING_CALENDAR, LENDING_START, business_days
from assets.lending.core import core_assets
from assets.lending.landing import LandingZone, LandingZoneResource, complete_versions, read_drop, write_drop
from assets.lending.raw import raw_assets
from assets.lending.reporting import reporting_assets
from assets.lending.simulator import build_drop, drop_window, simulate, write_correction
from assets.lending.tables import (
    CORE_LEDGER_ENTRIES,
    CORE_LOAN_DAILY_STATUS,
    LENDING_PARTITIONS,
    OPEN_STATUSES,
    RAW_TABLES,
)
from assets.lending.world import SimulationConfig
from batch_platform.business_calendar import BusinessCalendar, federal_reserve_holidays, financial_market_holidays
from batch_platform.freshness import due_partition
from batch_platform.lake import IcebergLakeResource
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource
from sensors.lending import (
    lending_daily_schedule,
    lending_landing_sensor,
    lending_restatement_sensor,
)

HOLIDAY = date(2023, 7, 4)  # Independence Day, a Tuesday
BEFORE, AFTER = date(2023, 7, 3), date(2023, 7, 5)
WINDOW = list(business_days(date(2023, 6, 26), date(2023, 7, 10)))  # ten business days around the holiday
NEW_YORK = ZoneInfo("America/New_York")
FED = BusinessCalendar(federal_reserve_holidays, years=range(2020, 2031))


# -- the calendar ---------------------------------------------------------------------------------------------------


def test_federal_reserve_holidays_are_not_business_days_and_weekend_ones_close_no_weekday() -> None:
    assert [FED.is_business_day(d) for d in (BEFORE, HOLIDAY, AFTER)] == [True, False, True]
    assert not FED.is_business_day(date(2023, 1, 2))  # New Year's Day (a Sunday) observed on Monday
    assert not FED.is_business_day(date(2023, 11, 23))  # Thanksgiving
    assert FED.is_business_day(date(2023, 11, 24))  # the Fed is open the day after Thanksgiving
    # Veterans Day 2023 fell on a Saturday: the Federal Reserve does not close the Friday before.
    assert FED.is_business_day(date(2023, 11, 10))
    assert not FED.is_holiday(date(2023, 11, 11))  # a Saturday: no working day is closed
    assert not FED.is_business_day(date(2023, 7, 8))  # a weekend is no business day, holiday or not


def test_a_financial_market_by_its_code_gives_the_same_days_as_the_federal_reserve_source() -> None:
    years = range(2023, 2025)
    by_code = BusinessCalendar(financial_market_holidays("XFED"), years=years)
    assert by_code.holidays == BusinessCalendar(federal_reserve_holidays, years=years).holidays
    assert by_code.holidays_between(date(2023, 1, 1), date(2023, 12, 31))[:2] == [date(2023, 1, 2), date(2023, 1, 16)]


def test_previous_and_next_business_day_step_over_holidays_and_weekends() -> None:
    assert FED.previous_business_day(AFTER) == BEFORE
    assert FED.next_business_day(BEFORE) == AFTER
    assert FED.previous_business_day(date(2023, 9, 5)) == date(2023, 9, 1)  # Tuesday after Labor Day -> Friday
    assert FED.next_business_day(date(2023, 9, 1)) == date(2023, 9, 5)
    assert FED.next_business_day(date(2023, 11, 22)) == date(2023, 11, 24)  # over Thanksgiving


def test_business_days_lists_the_open_days_of_a_range() -> None:
    assert list(FED.business_days(date(2023, 6, 30), date(2023, 7, 7))) == [
        date(2023, 6, 30),
        BEFORE,
        AFTER,
        date(2023, 7, 6),
        date(2023, 7, 7),
    ]
    assert FED.holidays_between(date(2023, 6, 1), date(2023, 7, 31)) == [date(2023, 6, 19), HOLIDAY]


def test_explicit_closures_and_working_weekdays_shape_a_calendar() -> None:
    freeze = date(2024, 3, 6)  # a Wednesday closed for a systems migration
    calendar = BusinessCalendar(closures=[freeze], weekdays=range(6), years=range(2024, 2025))  # Monday-Saturday
    assert not calendar.is_business_day(freeze)
    assert calendar.is_business_day(date(2024, 3, 9))  # a Saturday
    assert calendar.previous_business_day(date(2024, 3, 7)) == date(2024, 3, 5)
    assert BusinessCalendar(years=range(2023, 2024)).is_business_day(HOLIDAY)  # no holiday source: weekdays only


def test_a_day_outside_the_calendars_years_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match=r"outside the business calendar's years 2020\.\.2030"):
        FED.is_business_day(date(2031, 1, 2))
    with pytest.raises(ValueError, match="outside the calendar's years"):
        BusinessCalendar(closures=[date(1999, 12, 31)], years=range(2000, 2001))


def test_partitions_skip_holidays_and_end_with_the_calendar() -> None:
    partitions = FED.partitions_def("2023-06-26", timezone="America/New_York")
    assert partitions.get_partition_keys_in_range(dg.PartitionKeyRange("2023-06-26", "2023-07-10")) == [
        str(d) for d in WINDOW
    ]
    assert not partitions.has_partition_key(str(HOLIDAY))
    # The window before a holiday ends where the holiday begins (the holiday's window is excluded).
    window = partitions.time_window_for_partition_key(str(BEFORE))
    assert (window.start, window.end) == (
        datetime(2023, 7, 3, tzinfo=NEW_YORK),
        datetime(2023, 7, 4, tzinfo=NEW_YORK),
    )
    with dg.partition_loading_context(effective_dt=datetime(2035, 1, 1, tzinfo=NEW_YORK)):
        assert partitions.get_last_partition_key() == "2030-12-31"  # nothing past what the calendar knows


def test_a_first_partition_on_a_holiday_is_refused() -> None:
    with pytest.raises(ValueError, match="the first partition 2023-01-02 is not a business day"):
        FED.partitions_def("2023-01-02")


def test_the_day_chained_mapping_goes_from_the_day_after_a_holiday_to_the_day_before_it() -> None:
    mapping = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
    after = LENDING_PARTITIONS.subset_with_partition_keys([str(AFTER)])
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        after, LENDING_PARTITIONS, LENDING_PARTITIONS
    ).partitions_subset
    assert list(upstream.get_partition_keys()) == [str(BEFORE)]
    before = LENDING_PARTITIONS.subset_with_partition_keys([str(BEFORE)])
    downstream = mapping.get_downstream_partitions_for_partitions(before, LENDING_PARTITIONS, LENDING_PARTITIONS)
    assert list(downstream.get_partition_keys()) == [str(AFTER)]


def test_the_lenders_partitions_are_exactly_its_calendars_business_days() -> None:
    first, last = date.fromisoformat(LENDING_START), date(2025, 12, 31)
    keys = LENDING_PARTITIONS.get_partition_keys_in_range(dg.PartitionKeyRange(LENDING_START, str(last)))
    assert keys == [str(d) for d in LENDING_CALENDAR.business_days(first, last)]
    weekdays = sum(1 for n in range((last - first).days + 1) if (first + timedelta(days=n)).weekday() < 5)
    assert len(keys) + len(LENDING_CALENDAR.holidays_between(first, last)) == weekdays


def test_the_lenders_calendar_reaches_well_past_today() -> None:
    # The calendar refuses days past its years: this fails a decade before the pipeline would.
    assert LENDING_CALENDAR.last_day >= date.today() + timedelta(days=3650)


def test_freshness_expects_the_day_before_a_holiday_on_the_holidays_morning_and_never_the_holiday() -> None:
    six_hours = timedelta(hours=6)  # raw's deadline after a window closes
    expected = {
        datetime(2023, 7, 4, 5, tzinfo=NEW_YORK): "2023-06-30",
        datetime(2023, 7, 4, 7, tzinfo=NEW_YORK): str(BEFORE),
        datetime(2023, 7, 5, 12, tzinfo=NEW_YORK): str(BEFORE),
        datetime(2023, 7, 6, 7, tzinfo=NEW_YORK): str(AFTER),
    }
    for now, key in expected.items():
        due = due_partition(LENDING_PARTITIONS, six_hours, now)
        assert due is not None and due.key == key, now


# -- the simulator --------------------------------------------------------------------------------------------------


def test_no_drop_lands_for_a_holiday_and_the_next_drop_carries_its_events(tmp_path: Path) -> None:
    config = SimulationConfig(seed=3, start=date(2023, 5, 1), scale=0.05)  # loans old enough to have payments due
    landing = LandingZone.local(tmp_path)
    drops = simulate(config, WINDOW[0], WINDOW[-1], landing)
    assert [d.business_date for d in drops] == WINDOW
    assert complete_versions(landing, HOLIDAY) == []
    with pytest.raises(ValueError, match="not a business day"):
        drop_window(config, HOLIDAY)

    after = next(d for d in drops if d.business_date == AFTER)
    assert (after.covers_from, after.covers_to) == (HOLIDAY, AFTER)
    tables = read_drop(landing, AFTER)
    for dataset, column in (("applications", "application_date"), ("loans", "origination_date")):
        assert set(tables[dataset][column].to_pylist()) == {HOLIDAY, AFTER}, dataset
    assert HOLIDAY in set(tables["payments"]["payment_date"].to_pylist())  # installments due on the holiday
    before = read_drop(landing, BEFORE)
    assert max(before["applications"]["application_date"].to_pylist()) == BEFORE


# -- automation: the deadline schedule and the sensors --------------------------------------------------------------

SENSOR_CONFIG = SimulationConfig(seed=5, start=date(2023, 6, 26), scale=0.01)


@pytest.fixture
def automation(tmp_path: Path) -> Iterator[LendingAutomation]:
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield LendingAutomation(tmp_path, instance)


def test_the_deadline_on_the_holidays_morning_runs_the_business_day_before_it(automation: LendingAutomation) -> None:
    request = automation.deadline(HOLIDAY)
    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == (str(BEFORE), f"deadline:{BEFORE}")


def test_the_deadline_after_the_holiday_targets_the_day_before_it_and_runs_it_only_if_not_done(
    automation: LendingAutomation,
) -> None:
    # The holiday has no partition: the morning after it is still the previous business day's deadline. If the
    # holiday's tick already launched that day, the same run key keeps Dagster from launching it twice.
    missed = automation.deadline(AFTER)
    assert isinstance(missed, dg.RunRequest)
    assert (missed.partition_key, missed.run_key) == (str(BEFORE), f"deadline:{BEFORE}")

    automation.mark_built(PIPELINE_KEYS, [BEFORE])
    done = automation.deadline(AFTER)
    assert isinstance(done, dg.SkipReason)
    assert f"{BEFORE} is already materialized" in (done.skip_message or "")

    next_morning = automation.deadline(date(2023, 7, 6))
    assert isinstance(next_morning, dg.RunRequest) and next_morning.partition_key == str(AFTER)


def test_the_deadline_after_a_monday_holiday_targets_the_friday_before(automation: LendingAutomation) -> None:
    labor_day_tuesday = automation.deadline(date(2023, 9, 5))
    assert isinstance(labor_day_tuesday, dg.RunRequest) and labor_day_tuesday.partition_key == "2023-09-01"


def test_the_deadline_before_the_lenders_first_business_day_runs_nothing(automation: LendingAutomation) -> None:
    first_morning = automation.deadline(date.fromisoformat(LENDING_START))  # 2022-12-30 is no partition
    assert isinstance(first_morning, dg.SkipReason)


def test_the_deadline_ticks_every_morning_after_a_working_weekday_holidays_included() -> None:
    start = datetime(2023, 7, 2, 12, tzinfo=NEW_YORK).timestamp()
    schedule = lending_daily_schedule
    times = schedule_execution_time_iterator(start, schedule.cron_schedule, schedule.execution_timezone)
    mornings = [next(times).date() for _ in range(5)]
    assert mornings == [HOLIDAY, AFTER, date(2023, 7, 6), date(2023, 7, 7), date(2023, 7, 8)]


def test_the_day_after_a_holiday_runs_without_waiting_for_a_holiday_drop(automation: LendingAutomation) -> None:
    simulate(SENSOR_CONFIG, WINDOW[0], BEFORE, automation.landing)
    automation.load_raw(WINDOW[0], BEFORE)
    simulate(SENSOR_CONFIG, AFTER, AFTER, automation.landing)
    request = single_run_request(automation.tick(lending_landing_sensor))
    assert request.partition_key == str(AFTER)  # run, not pending behind a 2023-07-04 drop that never comes
    assert request.run_key == f"pos-lending-v1/business_date={AFTER}/v1"


def test_drops_on_both_sides_of_a_holiday_become_one_backfill_without_it(automation: LendingAutomation) -> None:
    simulate(SENSOR_CONFIG, WINDOW[0], WINDOW[-1], automation.landing)
    automation.load_raw(WINDOW[0], WINDOW[0])  # the day before the new ones is loaded
    targets = backfill_targets(single_run_request(automation.tick(lending_landing_sensor)))
    assert set(targets) == PIPELINE_KEYS
    assert all(keys == [str(d) for d in WINDOW[1:]] for keys in targets.values())


def test_a_drop_delivered_for_a_holiday_is_reported_and_never_run(automation: LendingAutomation) -> None:
    simulate(SENSOR_CONFIG, WINDOW[0], BEFORE, automation.landing)
    automation.load_raw(WINDOW[0], BEFORE)
    write_drop(automation.landing, HOLIDAY, 1, HOLIDAY, build_drop(SENSOR_CONFIG, AFTER))  # a producer's mistake
    result = automation.tick(lending_landing_sensor)
    assert not result.run_requests
    alert = automation.alerts_file.read_text()
    assert f"business_date={HOLIDAY}/v1" in alert and "is not a business day" in alert


def test_a_restatement_before_a_holiday_reaches_the_book_after_it(automation: LendingAutomation) -> None:
    simulate(SENSOR_CONFIG, WINDOW[0], WINDOW[-1], automation.landing)
    automation.load_raw(WINDOW[0], WINDOW[-1])
    raw_keys = {k for a in raw_assets for k in a.keys}
    automation.mark_built(PIPELINE_KEYS - raw_keys, WINDOW)
    quiet = automation.tick(lending_restatement_sensor)

    write_correction(SENSOR_CONFIG, BEFORE, automation.landing)
    targets = backfill_targets(single_run_request(automation.tick(lending_restatement_sensor, quiet.cursor)))
    after = [str(d) for d in WINDOW if d >= BEFORE]
    # The raw load of each later day reads the days before it (hold-backs, volumes): they are re-judged too.
    assert targets[RAW_TABLES["payments"].asset_key] == after
    assert targets[CORE_LOAN_DAILY_STATUS.asset_key] == after


# -- the loan book across the holiday, on Spark -----------------------------------------------------------------------

BOOK_CONFIG = SimulationConfig(seed=13, start=date(2023, 6, 1), scale=0.02)  # installments fall due from July 1
BOOK_DAYS = list(business_days(BOOK_CONFIG.start, WINDOW[-1]))


@dataclass
class Book:
    lake: IcebergLakeResource
    landing: LandingZone
    results: list[dg.ExecuteInProcessResult]


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory, spark_resource: SparkResource, spark: SparkSession) -> Book:
    root = tmp_path_factory.mktemp("holiday_book")
    landing = LandingZone.local(root / "landing")
    simulate(BOOK_CONFIG, BOOK_CONFIG.start, WINDOW[-1], landing)
    lake = IcebergLakeResource(data_dir=str(root / "lake"))
    resources = {
        "lake": lake,
        "spark": spark_resource,
        "landing": LandingZoneResource(uri=str(root / "landing")),
        "pii": PiiTokenizer(key="test-only-hmac-key-calendar-0123456789"),
    }
    instance = dg.DagsterInstance.ephemeral()
    # Two range runs of a backfill, split at the holiday: the second run's first day (2023-07-05) has to read its
    # opening balances from the lake, from 2023-07-03's partition.
    results = [
        dg.materialize(
            [*raw_assets, *core_assets, *reporting_assets],
            resources=resources,
            instance=instance,
            tags={"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)},
        )
        for first, last in ((BOOK_CONFIG.start, BEFORE), (AFTER, WINDOW[-1]))
    ]
    return Book(lake, landing, results)


def test_a_backfill_over_the_holiday_succeeds_with_every_check_passing(book: Book) -> None:
    assert all(r.success for r in book.results)
    failed = [
        (e.asset_key.to_user_string(), e.check_name)
        for r in book.results
        for e in r.get_asset_check_evaluations()
        if not e.passed
    ]
    assert failed == []
    for table in (CORE_LOAN_DAILY_STATUS, CORE_LEDGER_ENTRIES):
        assert set(book.lake.read_arrow(table)["business_date"].to_pylist()) == set(BOOK_DAYS), table.name


def _cents(value: Decimal) -> int:
    return int(value * 100)


def _by_loan(status: pa.Table, column: str) -> dict[int, int]:
    return dict(zip(status["loan_id"].to_pylist(), map(_cents, status[column].to_pylist()), strict=True))


def test_the_book_after_the_holiday_starts_from_the_book_before_it(book: Book) -> None:
    before = book.lake.read_arrow(CORE_LOAN_DAILY_STATUS, [str(BEFORE)])
    before = before.filter(pc.is_in(before["status"], pa.array(OPEN_STATUSES)))  # closed ones left the book
    after = book.lake.read_arrow(CORE_LOAN_DAILY_STATUS, [str(AFTER)])
    drop = read_drop(book.landing, AFTER)  # the holiday's events and 2023-07-05's

    reduced: dict[int, int] = defaultdict(int)
    payments = drop["payments"].filter(pc.invert(drop["payments"]["reversed"]))
    for loan_id, principal in zip(
        payments["loan_id"].to_pylist(), payments["principal_cents"].to_pylist(), strict=True
    ):
        reduced[loan_id] += principal
    for name, column in (("refunds", "amount_cents"), ("charge_offs", "principal_cents")):
        for loan_id, amount in zip(drop[name]["loan_id"].to_pylist(), drop[name][column].to_pylist(), strict=True):
            reduced[loan_id] += amount

    opening, closing = _by_loan(before, "outstanding_principal"), _by_loan(after, "outstanding_principal")
    new_loans = set(drop["loans"]["loan_id"].to_pylist())
    assert set(closing) == set(opening) | new_loans
    assert all(closing[loan] == opening[loan] - reduced[loan] for loan in opening)
    assert any(reduced[loan] for loan in opening)  # repayments dated on the holiday moved balances
    assert _by_loan(after, "principal_originated").items() >= _by_loan(before, "principal_originated").items()
    originated_on_holiday = drop["loans"].filter(pc.equal(drop["loans"]["origination_date"], pa.scalar(HOLIDAY)))
    assert originated_on_holiday.num_rows > 0
    assert set(originated_on_holiday["loan_id"].to_pylist()) <= set(closing)
