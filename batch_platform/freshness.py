"""Freshness: one FreshnessPolicy for every asset (group overrides win), and per-partition freshness checks.

Dagster's daemon evaluates a FreshnessPolicy per asset: any materialization counts, so backfilling last month makes
a time-partitioned asset look fresh while today's partition is missing. The ``partition_freshness`` check asks the
question that matters for partitioned data: has the latest partition whose window closed at least ``deadline`` ago
been materialized? A sensor evaluates it without launching runs and reports the result as a runless check
evaluation; the same check also runs inside every run that materializes the asset (Dagster adds an asset's checks
to its runs), so a run that lands the due partition turns the check green at once.

Dagster's own ``build_time_partition_freshness_checks`` + ``build_sensor_for_freshness_checks`` are superseded in
1.13 (they warn when called), express the deadline as a cron rather than hours after the window closes, and launch
a run for every evaluation (one Kubernetes run pod each in production); hence this module.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecord
from dagster._time import get_current_datetime  # the clock Dagster's own sensors use; tests can freeze it

CHECK_NAME = "partition_freshness"
DEFAULT_SENSOR_NAME = "partition_freshness_sensor"
DEFAULT_SENSOR_INTERVAL_SECONDS = 180
# Behind for more than a day past a deadline means consumers missed a cycle: an error, not a warning.
DEFAULT_ERROR_AFTER_OVERDUE_HOURS = 24.0

# Metadata keys of a check result; the sensor reads EXPECTED_PARTITION and OVERDUE_SINCE back to decide whether
# to report again.
EXPECTED_PARTITION = "expected_partition"
EXPECTED_WINDOW_END = "expected_partition_window_end"
DEADLINE_HOURS = "deadline_hours"
DUE_AT = "due_at"
LATEST_MATERIALIZED_PARTITION = "latest_materialized_partition"
OVERDUE_SINCE = "overdue_since"
OVERDUE_HOURS = "overdue_hours"
PARTITIONS_BEHIND = "partitions_behind"
EVALUATED_AT = "evaluated_at"
NO_PARTITION = ""


def deadline_policies(
    deadline_hours: Mapping[str, float], timezone: str, weekdays: str = "1-5"
) -> dict[str, dg.FreshnessPolicy]:
    """Per key (a layer, say), the policy "materialized within the ``hours`` before ``hours`` o'clock" on ``weekdays``
    (cron day-of-week field) in ``timezone``: daily deadlines for data of the previous business day."""
    return {
        key: dg.FreshnessPolicy.cron(
            f"0 {int(hours)} * * {weekdays}", lower_bound_delta=timedelta(hours=hours), timezone=timezone
        )
        for key, hours in deadline_hours.items()
    }


def apply_freshness_policies(
    defs: dg.Definitions, default: dg.FreshnessPolicy, by_group: Mapping[str, dg.FreshnessPolicy]
) -> dg.Definitions:
    """Give every materializable asset a freshness policy: its group's if ``by_group`` names one, else ``default``.

    An asset that declares its own policy keeps it. External assets (plain AssetSpecs) get none: nothing here
    materializes them, so the platform has no deadline to promise for them.
    """

    def with_policy(spec: dg.AssetSpec) -> dg.AssetSpec:
        policy = by_group.get(spec.group_name or "", default)
        return dg.apply_freshness_policy(spec, policy, overwrite_existing=False)

    return defs.map_resolved_asset_specs(func=with_policy, selection=dg.AssetSelection.all())


@dataclass(frozen=True)
class DuePartition:
    """The latest partition whose window closed at least the deadline ago: it must be materialized by now."""

    key: str
    window_end: datetime
    due_at: datetime


def due_partition(
    partitions_def: dg.TimeWindowPartitionsDefinition, deadline: timedelta, now: datetime
) -> DuePartition | None:
    """The partition that must exist at ``now``, or None when no partition is due yet.

    Windows are those of the partitions definition, in its time zone: for Monday-to-Friday partitions (cron
    ``0 0 * * 1-5``) Friday's window closes on Monday at 00:00, so over a weekend Thursday's partition is the one
    due. The deadline is elapsed time after the window closes (6 hours stay 6 hours across a DST change).
    """
    cutoff = now - deadline
    with dg.partition_loading_context(effective_dt=cutoff):
        window = partitions_def.get_last_partition_window()
        # With a positive end_offset the last partition is still open; step back to the last closed one.
        while window is not None and window.end > cutoff:
            window = partitions_def.get_prev_partition_window(window.start)
    if window is None:
        return None
    key = partitions_def.get_partition_key_range_for_time_window(window).start
    return DuePartition(key=key, window_end=window.end, due_at=window.end + deadline)


@dataclass(frozen=True)
class _Target:
    asset_key: dg.AssetKey
    partitions_def: dg.TimeWindowPartitionsDefinition
    deadline: timedelta

    @property
    def check_key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.asset_key, CHECK_NAME)


@dataclass(frozen=True)
class _Result:
    passed: bool
    severity: dg.AssetCheckSeverity
    description: str
    metadata: dict[str, dg.MetadataValue]


def _severity(overdue: timedelta, error_after: timedelta) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if overdue > error_after else dg.AssetCheckSeverity.WARN


def _latest_partition(partitions_def: dg.TimeWindowPartitionsDefinition, keys: Iterable[str]) -> str | None:
    """The newest partition by time window (not the last one written: a backfill writes old ones last)."""
    starts: dict[str, datetime] = {}
    for key in keys:
        try:
            starts[key] = partitions_def.start_time_for_partition_key(key)
        except ValueError:  # a key of an earlier partitions definition
            continue
    return max(starts, key=starts.__getitem__) if starts else None


def _first_missing_window(
    partitions_def: dg.TimeWindowPartitionsDefinition, latest: str | None, due: DuePartition, now: datetime
) -> dg.TimeWindow:
    """The oldest window after the newest materialized partition, up to the due one: where the asset fell behind."""
    due_window = partitions_def.time_window_for_partition_key(due.key)
    if latest is None:
        with dg.partition_loading_context(effective_dt=now):
            first = partitions_def.get_first_partition_window()
        return first or due_window
    latest_window = partitions_def.time_window_for_partition_key(latest)
    if latest_window.start >= due_window.start:  # a hole at the due partition, newer ones exist
        return due_window
    following = partitions_def.get_next_partition_window(latest_window.end, respect_bounds=False)
    return following if following is not None and following.start <= due_window.start else due_window


def _evaluate(instance: dg.DagsterInstance, target: _Target, now: datetime, error_after: timedelta) -> _Result:
    partitions_def = target.partitions_def
    due = due_partition(partitions_def, target.deadline, now)
    materialized = instance.get_materialized_partitions(target.asset_key)
    latest = _latest_partition(partitions_def, materialized)
    deadline_hours = target.deadline.total_seconds() / 3600
    metadata: dict[str, dg.MetadataValue] = {
        EXPECTED_PARTITION: dg.MetadataValue.text(due.key if due else NO_PARTITION),
        DEADLINE_HOURS: dg.MetadataValue.float(deadline_hours),
        LATEST_MATERIALIZED_PARTITION: dg.MetadataValue.text(latest or NO_PARTITION),
        EVALUATED_AT: dg.MetadataValue.timestamp(now),
    }
    if due is None:
        return _Result(True, dg.AssetCheckSeverity.WARN, "No partition is due yet.", metadata)
    metadata[EXPECTED_WINDOW_END] = dg.MetadataValue.timestamp(due.window_end)
    metadata[DUE_AT] = dg.MetadataValue.timestamp(due.due_at)
    if due.key in materialized:
        metadata[OVERDUE_HOURS] = dg.MetadataValue.float(0.0)
        return _Result(True, dg.AssetCheckSeverity.WARN, f"Partition {due.key} is materialized.", metadata)
    first_missing = _first_missing_window(partitions_def, latest, due, now)
    overdue_since = first_missing.end + target.deadline
    overdue = now - overdue_since
    behind = partitions_def.get_num_partitions_in_window(dg.TimeWindow(first_missing.start, due.window_end))
    metadata[OVERDUE_SINCE] = dg.MetadataValue.timestamp(overdue_since)
    metadata[OVERDUE_HOURS] = dg.MetadataValue.float(round(overdue.total_seconds() / 3600, 2))
    metadata[PARTITIONS_BEHIND] = dg.MetadataValue.int(behind)
    description = (
        f"Partition {due.key} is missing: its window closed at {due.window_end.isoformat()} and it was due "
        f"{deadline_hours:g} h later. Latest materialized partition: {latest or 'none'} "
        f"({behind} due partition(s) missing after it)."
    )
    return _Result(False, _severity(overdue, error_after), description, metadata)


def _is_current(
    record: AssetCheckExecutionRecord | None,
    due: DuePartition | None,
    latest_materialization_storage_id: int | None,
    now: datetime,
    error_after: timedelta,
) -> bool:
    """Whether the last recorded result still holds, so reporting it again would only fill the event log.

    It holds while the due partition is the same and the asset has had no materialization since (the result is
    tied to the asset's latest materialization, which is also what the UI shows it against). A failure is
    reported once more when it escalates from WARN to ERROR.
    """
    evaluation = record.evaluation if record else None
    if evaluation is None:
        return False
    expected = evaluation.metadata.get(EXPECTED_PARTITION)
    if expected is None or expected.value != (due.key if due else NO_PARTITION):
        return False
    target = evaluation.target_materialization_data
    if (target.storage_id if target else None) != latest_materialization_storage_id:
        return False
    if evaluation.passed:
        return True
    overdue_since = evaluation.metadata.get(OVERDUE_SINCE)
    if not isinstance(overdue_since, dg.TimestampMetadataValue):
        return False
    overdue = now.timestamp() - overdue_since.value
    return evaluation.severity == _severity(timedelta(seconds=overdue), error_after)


def _targets(
    assets_def: dg.AssetsDefinition, deadline_hours_by_group: Mapping[str, float], default_deadline_hours: float
) -> list[_Target]:
    partitions_def = assets_def.partitions_def
    if not assets_def.is_materializable or not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return []
    return [
        _Target(
            key,
            partitions_def,
            timedelta(hours=deadline_hours_by_group.get(assets_def.group_names_by_key[key], default_deadline_hours)),
        )
        for key in sorted(assets_def.keys)
    ]


def _check_definition(name: str, targets: list[_Target], error_after: timedelta) -> dg.AssetChecksDefinition:
    by_key = {t.check_key: t for t in targets}

    @dg.multi_asset_check(
        name=name,
        specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset=t.asset_key,
                description=(
                    f"The latest partition whose window closed at least {t.deadline.total_seconds() / 3600:g} h ago "
                    "is materialized. Evaluated by the partition freshness sensor and in runs of the asset."
                ),
                metadata={DEADLINE_HOURS: t.deadline.total_seconds() / 3600},
            )
            for t in targets
        ],
        can_subset=True,
    )
    def partition_freshness(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        now = get_current_datetime()
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string()):
            result = _evaluate(context.instance, by_key[check_key], now, error_after)
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=CHECK_NAME,
                passed=result.passed,
                severity=result.severity,
                description=result.description,
                metadata=result.metadata,
            )

    return partition_freshness


def _op_name(assets_def: dg.AssetsDefinition) -> str:
    return f"{assets_def.node_def.name}_{CHECK_NAME}"


def build_partition_freshness_checks(
    assets: Iterable[object],
    deadline_hours_by_group: Mapping[str, float],
    default_deadline_hours: float,
    *,
    error_after_overdue_hours: float = DEFAULT_ERROR_AFTER_OVERDUE_HOURS,
    sensor_name: str = DEFAULT_SENSOR_NAME,
    minimum_interval_seconds: int = DEFAULT_SENSOR_INTERVAL_SECONDS,
) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """A ``partition_freshness`` check for every time-partitioned materializable asset, and the sensor that runs them.

    ``assets`` may be everything the code location defines; other entries are skipped. An asset's deadline is its
    group's entry in ``deadline_hours_by_group``, else ``default_deadline_hours``: hours after the partition's
    window closes. A failing check is a WARN, and an ERROR once the asset has been behind for more than
    ``error_after_overdue_hours`` (counted from the deadline of the oldest missing partition after the newest one
    materialized: a daily asset two days behind is an ERROR though today's partition is only just late).
    Checks never block: holding back downstream assets would only make late data later.

    The sensor (running by default) reports a result only when it can differ from the last one recorded: the due
    partition moved on, the asset was materialized since, or a failure escalated. Between those it skips, so the
    event log gets a handful of results per asset and day, not one per tick.
    """
    error_after = timedelta(hours=error_after_overdue_hours)
    checks = []
    targets: list[_Target] = []
    for assets_def in assets:
        if not isinstance(assets_def, dg.AssetsDefinition):
            continue
        own = _targets(assets_def, deadline_hours_by_group, default_deadline_hours)
        if own:
            # One check op per assets definition: a run of a multi-asset gets one extra step, not one per table.
            checks.append(_check_definition(_op_name(assets_def), own, error_after))
            targets.extend(own)

    @dg.sensor(
        name=sensor_name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reports the partition_freshness checks of time-partitioned assets without launching runs.",
    )
    def partition_freshness_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if not targets:
            return dg.SkipReason("No time-partitioned asset to check.")
        now = get_current_datetime()
        instance = context.instance
        summaries = instance.event_log_storage.get_asset_check_summary_records([t.check_key for t in targets])
        records = instance.get_asset_records(list({t.asset_key for t in targets}))
        last_materialization = {r.asset_entry.asset_key: r.asset_entry.last_materialization_record for r in records}
        events = []
        for target in targets:
            materialization = last_materialization.get(target.asset_key)
            summary = summaries.get(target.check_key)
            last_result = summary.last_completed_check_execution_record if summary else None
            due = due_partition(target.partitions_def, target.deadline, now)
            storage_id = materialization.storage_id if materialization else None
            if _is_current(last_result, due, storage_id, now, error_after):
                continue
            result = _evaluate(instance, target, now, error_after)
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=target.asset_key,
                    check_name=CHECK_NAME,
                    passed=result.passed,
                    severity=result.severity,
                    description=result.description,
                    metadata=result.metadata,
                    blocking=False,
                    # Ties the result to the latest materialization, as a check run after it would be.
                    target_materialization_data=(
                        AssetCheckEvaluationTargetMaterializationData(
                            storage_id=materialization.storage_id,
                            run_id=materialization.run_id,
                            timestamp=materialization.timestamp,
                        )
                        if materialization
                        else None
                    ),
                )
            )
        if not events:
            return dg.SkipReason("No partition freshness result changed since the last report.")
        return dg.SensorResult(asset_events=events)

    return checks, partition_freshness_sensor
