"""Freshness: policies mapped over every asset, and partition freshness checks reported by a sensor.

The checks run against a real Dagster instance with real materializations of small partitioned assets. "Now" is
frozen with Dagster's own clock (``freeze_time``), which the sensor and the check read, so no test depends on the
wall clock.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._core.test_utils import freeze_time

from batch_platform.freshness import (
    CHECK_NAME,
    DEADLINE_HOURS,
    EXPECTED_PARTITION,
    EXPECTED_WINDOW_END,
    LATEST_MATERIALIZED_PARTITION,
    OVERDUE_HOURS,
    PARTITIONS_BEHIND,
    apply_freshness_policies,
    build_partition_freshness_checks,
    due_partition,
)

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC")
BUSINESS_DAYS = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5", start="2024-01-01", timezone="UTC", fmt="%Y-%m-%d"
)
INGEST_DEADLINE_HOURS = 6.0
DEFAULT_DEADLINE_HOURS = 10.0


@dg.asset(partitions_def=DAILY, group_name="ingest")
def orders() -> int:
    return 1


@dg.asset(partitions_def=BUSINESS_DAYS, group_name="books")
def ledger() -> int:
    return 1


@dg.asset(group_name="marts")
def summary() -> int:
    return 1


OWN_POLICY = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=1))


@dg.asset(group_name="ingest", freshness_policy=OWN_POLICY)
def curated() -> int:
    return 1


VENDOR_FEED = dg.AssetSpec("vendor_feed", group_name="ingest")

CHECKS, SENSOR = build_partition_freshness_checks(
    [orders, ledger, summary, VENDOR_FEED],
    deadline_hours_by_group={"ingest": INGEST_DEADLINE_HOURS},
    default_deadline_hours=DEFAULT_DEADLINE_HOURS,
)
ORDERS_CHECK = dg.AssetCheckKey(orders.key, CHECK_NAME)
LEDGER_CHECK = dg.AssetCheckKey(ledger.key, CHECK_NAME)


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def materialize(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, partition: str, now: datetime) -> None:
    with freeze_time(now):
        assert dg.materialize([asset], partition_key=partition, instance=instance).success


def tick(instance: dg.DagsterInstance, now: datetime) -> dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]:
    """One sensor tick at ``now``; its results are stored the way the sensor daemon stores them."""
    with freeze_time(now):
        data = SENSOR.evaluate_tick(dg.build_sensor_context(instance=instance))
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return {e.asset_check_key: e for e in data.asset_events if isinstance(e, dg.AssetCheckEvaluation)}


def recorded(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey) -> dg.AssetCheckEvaluation:
    summary = instance.event_log_storage.get_asset_check_summary_records([check_key])[check_key]
    assert summary.last_completed_check_execution_record is not None
    evaluation = summary.last_completed_check_execution_record.evaluation
    assert evaluation is not None
    return evaluation


# --- freshness policies ---------------------------------------------------------------------------------------

DEFAULT_POLICY = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=24))
INGEST_POLICY = dg.FreshnessPolicy.cron("0 6 * * *", lower_bound_delta=timedelta(hours=6))


def snapshot(defs: dg.Definitions) -> RepositorySnap:
    """The code location as the webserver and the daemon's freshness loop receive it."""
    return RepositorySnap.from_def(defs.get_repository_def())


def policies() -> dict[dg.AssetKey, dg.FreshnessPolicy | None]:
    defs = apply_freshness_policies(
        dg.Definitions(assets=[orders, summary, curated, VENDOR_FEED]),
        default=DEFAULT_POLICY,
        by_group={"ingest": INGEST_POLICY},
    )
    return {node.asset_key: node.freshness_policy for node in snapshot(defs).asset_nodes}


def test_an_asset_of_a_group_without_override_gets_the_default_policy() -> None:
    assert policies()[summary.key] == DEFAULT_POLICY


def test_a_group_override_wins_over_the_default_policy() -> None:
    assert policies()[orders.key] == INGEST_POLICY


def test_an_asset_keeps_the_policy_it_declares_itself() -> None:
    assert policies()[curated.key] == OWN_POLICY


def test_an_external_asset_gets_no_policy() -> None:
    assert policies()[VENDOR_FEED.key] is None


# --- which partition is due ---------------------------------------------------------------------------------


def test_daily_partition_is_due_deadline_hours_after_its_window_closes() -> None:
    deadline = timedelta(hours=6)
    before = due_partition(DAILY, deadline, at("2024-01-10T05:59"))
    after = due_partition(DAILY, deadline, at("2024-01-10T06:00"))
    assert before is not None and before.key == "2024-01-08"
    assert after is not None and after.key == "2024-01-09"
    assert after.window_end == at("2024-01-10T00:00")
    assert after.due_at == at("2024-01-10T06:00")


def test_business_day_partition_of_friday_is_due_only_after_its_window_closes_on_monday() -> None:
    deadline = timedelta(hours=6)
    # 2024-01-05 is a Friday: its window runs to Monday 2024-01-08 00:00, so all weekend Thursday's is the one due.
    sunday = due_partition(BUSINESS_DAYS, deadline, at("2024-01-07T12:00"))
    monday_early = due_partition(BUSINESS_DAYS, deadline, at("2024-01-08T05:00"))
    monday_after_deadline = due_partition(BUSINESS_DAYS, deadline, at("2024-01-08T07:00"))
    assert sunday is not None and sunday.key == "2024-01-04"
    assert monday_early is not None and monday_early.key == "2024-01-04"
    assert monday_after_deadline is not None and monday_after_deadline.key == "2024-01-05"
    assert monday_after_deadline.window_end == at("2024-01-08T00:00")


def test_windows_close_at_midnight_in_the_partitions_time_zone() -> None:
    new_york = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="America/New_York")
    # 2024-01-09 closes at 2024-01-10 00:00 in New York = 05:00 UTC, so with 6 hours it is due at 11:00 UTC.
    before = due_partition(new_york, timedelta(hours=6), at("2024-01-10T10:59"))
    after = due_partition(new_york, timedelta(hours=6), at("2024-01-10T11:00"))
    assert before is not None and before.key == "2024-01-08"
    assert after is not None and after.key == "2024-01-09"


def test_a_partition_still_open_is_never_due_even_if_the_definition_already_lists_it() -> None:
    with_today = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)
    due = due_partition(with_today, timedelta(hours=6), at("2024-01-10T07:00"))
    assert due is not None and due.key == "2024-01-09"


def test_no_partition_is_due_before_the_first_window_closes_plus_the_deadline() -> None:
    assert due_partition(DAILY, timedelta(hours=6), at("2024-01-02T05:00")) is None


# --- checks and sensor on a real instance -------------------------------------------------------------------


def test_only_time_partitioned_materializable_assets_get_a_declared_check_with_their_groups_deadline() -> None:
    defs = dg.Definitions(assets=[orders, ledger, summary, VENDOR_FEED], asset_checks=CHECKS, sensors=[SENSOR])
    repository = snapshot(defs)
    assert {(c.asset_key, c.name) for c in repository.asset_check_nodes or []} == {
        (orders.key, CHECK_NAME),
        (ledger.key, CHECK_NAME),
    }
    deadlines = {spec.key: spec.metadata[DEADLINE_HOURS] for checks in CHECKS for spec in checks.check_specs}
    assert deadlines == {ORDERS_CHECK: INGEST_DEADLINE_HOURS, LEDGER_CHECK: DEFAULT_DEADLINE_HOURS}
    assert SENSOR.default_status == dg.DefaultSensorStatus.RUNNING


def test_check_fails_while_the_due_partition_is_missing_and_passes_once_it_is_materialized(
    instance: dg.DagsterInstance,
) -> None:
    materialize(instance, orders, "2024-01-08", at("2024-01-09T03:00"))

    failed = tick(instance, at("2024-01-10T07:30"))[ORDERS_CHECK]
    assert not failed.passed
    assert failed.severity == dg.AssetCheckSeverity.WARN
    assert failed.metadata[EXPECTED_PARTITION].value == "2024-01-09"
    assert failed.metadata[EXPECTED_WINDOW_END].value == at("2024-01-10T00:00").timestamp()
    assert failed.metadata[DEADLINE_HOURS].value == INGEST_DEADLINE_HOURS
    assert failed.metadata[LATEST_MATERIALIZED_PARTITION].value == "2024-01-08"
    assert failed.metadata[OVERDUE_HOURS].value == 1.5

    materialize(instance, orders, "2024-01-09", at("2024-01-10T08:00"))
    passed = tick(instance, at("2024-01-10T08:05"))[ORDERS_CHECK]
    assert passed.passed
    assert passed.metadata[EXPECTED_PARTITION].value == "2024-01-09"
    assert recorded(instance, ORDERS_CHECK).passed


def test_materializing_an_older_partition_does_not_make_the_check_pass(instance: dg.DagsterInstance) -> None:
    materialize(instance, orders, "2024-01-08", at("2024-01-09T03:00"))
    assert not tick(instance, at("2024-01-10T07:00"))[ORDERS_CHECK].passed

    # A backfill of older days lands after the due partition's deadline.
    materialize(instance, orders, "2024-01-03", at("2024-01-10T07:10"))
    after_backfill = tick(instance, at("2024-01-10T07:15"))[ORDERS_CHECK]
    assert not after_backfill.passed
    assert after_backfill.metadata[EXPECTED_PARTITION].value == "2024-01-09"
    # The newest partition by date, not the one written last.
    assert after_backfill.metadata[LATEST_MATERIALIZED_PARTITION].value == "2024-01-08"


def test_business_day_check_passes_over_the_weekend_with_thursday_materialized(instance: dg.DagsterInstance) -> None:
    materialize(instance, ledger, "2024-01-04", at("2024-01-05T03:00"))
    assert tick(instance, at("2024-01-07T12:00"))[LEDGER_CHECK].passed  # Sunday
    monday = tick(instance, at("2024-01-08T11:00"))[LEDGER_CHECK]  # Friday's window closed 11 h ago, deadline 10 h
    assert not monday.passed
    assert monday.metadata[EXPECTED_PARTITION].value == "2024-01-05"


def test_sensor_reports_a_result_again_only_when_it_can_have_changed(instance: dg.DagsterInstance) -> None:
    # Business days, deadline 10 h: Thursday 2024-01-04 is due on Friday at 10:00, Friday's on Monday at 10:00.
    materialize(instance, ledger, "2024-01-03", at("2024-01-04T03:00"))
    first = tick(instance, at("2024-01-05T11:00"))[LEDGER_CHECK]
    assert (first.passed, first.severity) == (False, dg.AssetCheckSeverity.WARN)

    assert LEDGER_CHECK not in tick(instance, at("2024-01-05T11:03"))  # nothing changed
    assert LEDGER_CHECK not in tick(instance, at("2024-01-06T09:59"))  # same partition due, still within a day
    escalated = tick(instance, at("2024-01-06T10:01"))[LEDGER_CHECK]  # a day past the deadline
    assert (escalated.severity, escalated.metadata[EXPECTED_PARTITION].value) == (
        dg.AssetCheckSeverity.ERROR,
        "2024-01-04",
    )
    assert LEDGER_CHECK not in tick(instance, at("2024-01-07T12:00"))
    rolled = tick(instance, at("2024-01-08T10:01"))[LEDGER_CHECK]  # Friday's partition became due
    assert rolled.metadata[EXPECTED_PARTITION].value == "2024-01-05"
    assert rolled.metadata[PARTITIONS_BEHIND].value == 2

    materialize(instance, ledger, "2024-01-02", at("2024-01-08T10:30"))  # any new materialization: evaluate again
    assert LEDGER_CHECK in tick(instance, at("2024-01-08T10:33"))


def test_a_daily_asset_two_partitions_behind_is_an_error(instance: dg.DagsterInstance) -> None:
    materialize(instance, orders, "2024-01-07", at("2024-01-08T03:00"))
    # Due: 2024-01-09 (since 06:00); 2024-01-08 is missing too and was due at 2024-01-09 06:00, 25 h ago.
    behind = tick(instance, at("2024-01-10T07:00"))[ORDERS_CHECK]
    assert (behind.passed, behind.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert behind.metadata[PARTITIONS_BEHIND].value == 2
    assert behind.metadata[OVERDUE_HOURS].value == 25.0


def test_sensor_result_is_the_checks_execution_for_the_latest_materialization(instance: dg.DagsterInstance) -> None:
    materialize(instance, orders, "2024-01-08", at("2024-01-09T03:00"))
    tick(instance, at("2024-01-10T07:00"))

    [asset_record] = instance.get_asset_records([orders.key])
    target = recorded(instance, ORDERS_CHECK).target_materialization_data
    # The UI shows a check's execution against the asset's latest materialization only if it targets it.
    assert target is not None
    assert target.storage_id == asset_record.asset_entry.last_materialization_storage_id


def test_a_run_that_materializes_the_due_partition_records_a_passing_check_the_sensor_does_not_repeat(
    instance: dg.DagsterInstance,
) -> None:
    orders_checks = [c for c in CHECKS if ORDERS_CHECK in c.check_keys]
    with freeze_time(at("2024-01-10T07:00")):
        result = dg.materialize([orders, *orders_checks], partition_key="2024-01-09", instance=instance)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.asset_check_key == ORDERS_CHECK
    assert evaluation.passed

    assert ORDERS_CHECK not in tick(instance, at("2024-01-10T07:05"))
