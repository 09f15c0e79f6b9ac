"""Automation of the loan pipeline: the landing and restatement sensors and the daily deadline schedule.

- ``lending_landing_sensor``: a complete drop (manifest present) for a business day that has not been loaded starts
  the day's pipeline (raw through reporting): one run with a stable run key per drop, or, when several days landed
  at once, one asset backfill over them (the day-chained loan book needs them in order). Corrupt drops and drops
  left incomplete are reported, never run.
- ``lending_restatement_sensor``: a new version of a day that is loaded with an older version starts ONE asset
  backfill over that day's raw partition and everything downstream of it, including every later day of the
  day-chained ``core/loan_daily_status`` and what reads it.
- ``lending_daily_schedule``: the deadline. After a business day closes in the business time zone, plus a delay
  for late landing, it runs the day's pipeline unless the sensor already did; a missing drop then fails loudly.

Both sensors wait while any run or backfill of the pipeline is in flight: a new day reads the previous day's loan
book, and a restatement rewrites the days after it, so the pipeline's automation never overlaps itself.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from assets.lending import DOMAIN
from assets.lending.contract import LENDING_START, previous_business_day
from assets.lending.landing import DATASET_VERSION, MANIFEST_NAME, DropInfo, LandingZoneResource
from assets.lending.tables import LENDING_PARTITIONS, RAW_QUARANTINE, RAW_TABLES
from batch_platform.alerts import Alert, AlertSeverity, AlertsResource
from batch_platform.automation import backfill_request, downstream_closure, in_flight, latest_materializations
from batch_platform.domain import layer_selection
from batch_platform.listing import ListedObject, ListingCursor, ObjectStore

_DROP_OBJECT = re.compile(
    rf"^{re.escape(DATASET_VERSION)}/business_date=(?P<date>\d{{4}}-\d{{2}}-\d{{2}})/v(?P<version>[1-9]\d*)/(?P<name>[^/]+)$"
)
# A drop folder with files but no manifest this long after its last file is reported as incomplete.
INCOMPLETE_AFTER_SECONDS = 2 * 3600
# Modification times younger than this are not trusted to be final (see ListingCursor).
SETTLE_SECONDS = 3600
SENSOR_INTERVAL_SECONDS = 30
LOADED_VERSION_ASSET = RAW_TABLES["loans"].asset_key  # every raw table records the drop version it loaded
RAW_ASSET_KEYS = [*(t.asset_key for t in RAW_TABLES.values()), RAW_QUARANTINE.asset_key]
PIPELINE = layer_selection(DOMAIN, "raw", "core", "reporting")  # lending_raw, lending_core, lending_reporting
DROP_TAG = "batch-platform/landing-drops"
RESTATEMENT_TAG = "batch-platform/restatement"


# -- reading the landing zone -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    business_date: str
    version: int

    @property
    def prefix(self) -> str:
        return f"{DATASET_VERSION}/business_date={self.business_date}/v{self.version}"

    def to_json(self) -> list[Any]:
        return [self.business_date, self.version]


@dataclass(frozen=True)
class RejectedDrop:
    prefix: str
    problems: tuple[str, ...]


@dataclass
class LandingScan:
    complete: list[Drop] = field(default_factory=list)
    corrupt: list[RejectedDrop] = field(default_factory=list)
    incomplete: list[RejectedDrop] = field(default_factory=list)
    listed: list[ListedObject] = field(default_factory=list)
    manifests_read: int = 0


def landing_store(landing: LandingZoneResource) -> ObjectStore:
    """The landing zone as listed: the same resource (root, endpoint, region) the raw load reads drops through."""
    return landing.object_store()


def _manifest_problems(store: ObjectStore, drop: Drop, files: dict[str, ListedObject]) -> list[str]:
    """Why a drop with a manifest cannot be loaded, from the manifest and the listing alone (the raw load then
    verifies every checksum)."""
    try:
        manifest = json.loads(store.read(f"{drop.prefix}/{MANIFEST_NAME}"))
        info = DropInfo.from_manifest(manifest)
    except (ValueError, KeyError, TypeError) as exc:
        return [f"the manifest cannot be read: {exc!r}"]
    problems = []
    if (info.business_date.isoformat(), info.version) != (drop.business_date, drop.version):
        problems.append(f"the manifest is for {info.business_date} v{info.version}, its folder for {drop.prefix}")
    for entry in info.files:
        name = entry.key.rsplit("/", 1)[-1]
        listed = files.get(name)
        if listed is None:
            problems.append(f"{entry.dataset}: {name} is missing")
        elif listed.size != entry.size_bytes:
            problems.append(f"{entry.dataset}: {name} has {listed.size} bytes, the manifest says {entry.size_bytes}")
    if not LENDING_PARTITIONS.has_partition_key(drop.business_date):
        problems.append(f"{drop.business_date} is not a business day of the loan pipeline (a weekend or a holiday)")
    return problems


def scan_landing(
    store: ObjectStore, cursor: ListingCursor, now: float, reported_incomplete: Collection[str] = ()
) -> LandingScan:
    """Complete, corrupt and incomplete drops among what is new since ``cursor``; reads only new manifests."""
    scan = LandingScan(listed=list(store.list(DATASET_VERSION)))
    folders: dict[Drop, dict[str, ListedObject]] = {}
    for obj in scan.listed:
        if match := _DROP_OBJECT.match(obj.key):
            drop = Drop(match["date"], int(match["version"]))
            folders.setdefault(drop, {})[match["name"]] = obj
    for drop, files in sorted(folders.items(), key=lambda item: (item[0].business_date, item[0].version)):
        manifest = files.get(MANIFEST_NAME)
        if manifest is None:
            newest = max(f.modified for f in files.values())
            if now - newest > INCOMPLETE_AFTER_SECONDS and drop.prefix not in reported_incomplete:
                age_hours = (now - newest) / 3600
                scan.incomplete.append(
                    RejectedDrop(drop.prefix, (f"no manifest {age_hours:.1f} h after its last file was written",))
                )
            continue
        if not cursor.is_new(manifest):
            continue
        scan.manifests_read += 1
        if problems := _manifest_problems(store, drop, files):
            scan.corrupt.append(RejectedDrop(drop.prefix, tuple(problems)))
        else:
            scan.complete.append(drop)
    return scan


# -- the sensors' state ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchState:
    """A sensor's cursor: the listing position, drops decided on later, incomplete folders already reported."""

    listing: ListingCursor = field(default_factory=ListingCursor)
    pending: tuple[Drop, ...] = ()
    reported_incomplete: frozenset[str] = frozenset()

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "listing": self.listing.to_json(),
                "pending": [d.to_json() for d in self.pending],
                "reported_incomplete": sorted(self.reported_incomplete),
            },
            sort_keys=True,
        )

    @classmethod
    def from_cursor(cls, cursor: str | None) -> WatchState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(
            ListingCursor.from_json(data.get("listing")),
            tuple(Drop(d, int(v)) for d, v in data.get("pending", [])),
            frozenset(data.get("reported_incomplete", [])),
        )


def latest_per_day(drops: Iterable[Drop]) -> dict[str, Drop]:
    latest: dict[str, Drop] = {}
    for drop in drops:
        if drop.business_date not in latest or drop.version > latest[drop.business_date].version:
            latest[drop.business_date] = drop
    return latest


def loaded_versions(instance: dg.DagsterInstance, business_dates: Collection[str]) -> dict[str, int]:
    """The drop version each business day's raw partition was last loaded from (absent: never loaded)."""
    loaded = {}
    for key, materialization in latest_materializations(instance, LOADED_VERSION_ASSET, business_dates).items():
        versions = materialization.metadata.get("landing/drop_versions")
        if isinstance(versions, dg.JsonMetadataValue) and isinstance(versions.data, dict) and key in versions.data:
            loaded[key] = int(versions.data[key])
    return loaded


def _pipeline_keys(context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext) -> set[dg.AssetKey]:
    return set(PIPELINE.resolve(dg_repository(context).asset_graph))


def dg_repository(context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext) -> dg.RepositoryDefinition:
    repository = context.repository_def
    if repository is None:
        raise dg.DagsterInvariantViolationError("the loan pipeline's automation needs the repository definition")
    return repository


def pipeline_in_flight(context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext) -> list[str]:
    repository = dg_repository(context)

    def job_assets(job_name: str) -> Collection[dg.AssetKey]:
        if not repository.has_job(job_name):
            return ()
        return repository.get_job(job_name).asset_layer.selected_asset_keys

    return [f.describe() for f in in_flight(context.instance, _pipeline_keys(context), job_assets)]


def report_rejected(
    context: dg.SensorEvaluationContext, alerts: AlertsResource, scan: LandingScan, location: str
) -> list[str]:
    """Log and alert every corrupt or incomplete drop of the scan (each is scanned as new once); their lines."""
    lines = []
    for kind, rejected, severity in (
        ("corrupt", scan.corrupt, AlertSeverity.ERROR),
        ("incomplete", scan.incomplete, AlertSeverity.WARNING),
    ):
        for drop in rejected:
            line = f"{kind} drop {drop.prefix}: {'; '.join(drop.problems)}"
            context.log.error(f"{line} (not run)")
            alerts.send(
                Alert(
                    title=f"Landing drop {kind}, not loaded: {drop.prefix}",
                    error_message="\n".join(drop.problems) + f"\nlanding: {location}",
                    severity=severity,
                    partition=drop.prefix.split("business_date=")[1].split("/")[0],
                )
            )
            lines.append(line)
    return lines


# -- the landing sensor ---------------------------------------------------------------------------------------------


def previous_day(day: str) -> str | None:
    """The business day before ``day`` (holidays are no partitions, so never a holiday); None for the first."""
    window = LENDING_PARTITIONS.get_prev_partition_window(LENDING_PARTITIONS.time_window_for_partition_key(day).start)
    return window.start.strftime("%Y-%m-%d") if window else None


def _runnable(new_days: Sequence[str], loaded: Collection[str]) -> list[str]:
    """The new days whose previous business day is loaded or runs with them (a gap waits for its drop)."""
    runnable: list[str] = []
    for day in sorted(new_days):
        previous = previous_day(day)
        if previous is None or previous in loaded or previous in runnable:
            runnable.append(day)
        else:
            break
    return runnable


def evaluate_landing(
    context: dg.SensorEvaluationContext,
    landing: LandingZoneResource,
    alerts: AlertsResource,
    now: float | None = None,
) -> dg.SensorResult:
    now = time.time() if now is None else now
    state = WatchState.from_cursor(context.cursor)
    scan = scan_landing(landing_store(landing), state.listing, now, state.reported_incomplete)
    rejections = report_rejected(context, alerts, scan, landing.location())
    candidates = latest_per_day([*state.pending, *scan.complete])
    previous = {p for day in candidates if (p := previous_day(day))}
    loaded = loaded_versions(context.instance, [*candidates, *previous])
    new_days = {day: drop for day, drop in candidates.items() if day not in loaded}

    requests: list[dg.RunRequest] = []
    pending: list[Drop] = []
    reason = None
    if new_days:
        blockers = pipeline_in_flight(context)
        runnable = [] if blockers else _runnable(list(new_days), loaded)
        pending = [drop for day, drop in sorted(new_days.items()) if day not in runnable]
        if blockers:
            reason = f"{len(new_days)} new drop(s) wait for {blockers[0]}"
        elif pending:
            reason = (
                f"{len(pending)} new drop(s) wait for the drop of the business day before {pending[0].business_date}"
            )
        drops = [new_days[day] for day in runnable]
        tags = {DROP_TAG: ",".join(d.prefix for d in drops)}
        if len(drops) == 1:
            requests.append(
                dg.RunRequest(
                    run_key=drops[0].prefix,  # stable per drop: a re-evaluated tick never loads it twice
                    partition_key=drops[0].business_date,
                    asset_selection=sorted(_pipeline_keys(context)),
                    tags=tags,
                )
            )
        elif drops:
            targets = {key: [d.business_date for d in drops] for key in _pipeline_keys(context)}
            requests.append(backfill_request(dg_repository(context).asset_graph, targets, tags))
    reported = (state.reported_incomplete | {r.prefix for r in scan.incomplete}) - {d.prefix for d in scan.complete}
    next_state = WatchState(state.listing.advanced(scan.listed, now, SETTLE_SECONDS), tuple(pending), reported)
    if not requests and reason is None:
        reason = "; ".join(rejections) if rejections else f"no new complete drop ({scan.manifests_read} new manifests)"
    return dg.SensorResult(
        run_requests=requests, cursor=next_state.to_cursor(), skip_reason=reason if not requests else None
    )


@dg.sensor(
    name="lending_landing_sensor",
    description="Runs the loan pipeline for each business day whose landing drop is complete and not yet loaded.",
    asset_selection=PIPELINE,  # the sensor daemon only launches backfills for a sensor with an asset selection
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lending_landing_sensor(
    context: dg.SensorEvaluationContext, landing: LandingZoneResource, alerts: AlertsResource
) -> dg.SensorResult:
    return evaluate_landing(context, landing, alerts)


# -- the restatement sensor -----------------------------------------------------------------------------------------


def evaluate_restatement(
    context: dg.SensorEvaluationContext, landing: LandingZoneResource, now: float | None = None
) -> dg.SensorResult:
    """Like the landing sensor, but for new versions of loaded days; rejected drops are the landing sensor's to
    report."""
    now = time.time() if now is None else now
    state = WatchState.from_cursor(context.cursor)
    scan = scan_landing(landing_store(landing), state.listing, now, state.reported_incomplete)
    candidates = latest_per_day([*state.pending, *(d for d in scan.complete if d.version > 1)])
    loaded = loaded_versions(context.instance, list(candidates))
    restated = {day: drop for day, drop in candidates.items() if day in loaded and drop.version > loaded[day]}

    requests = []
    pending: list[Drop] = []
    reason = f"no restated day ({scan.manifests_read} new manifests)"
    if restated:
        blockers = pipeline_in_flight(context)
        if blockers:
            pending = sorted(restated.values(), key=lambda d: d.business_date)
            reason = f"restatement of {', '.join(sorted(restated))} waits for {blockers[0]}"
        else:
            repository = dg_repository(context)
            pipeline = _pipeline_keys(context)
            days = sorted(restated)
            targets = downstream_closure(
                repository.asset_graph,
                roots={key: days for key in RAW_ASSET_KEYS},
                existing=lambda key: context.instance.get_materialized_partitions(key) if key in pipeline else (),
            )
            tags = {RESTATEMENT_TAG: ",".join(d.prefix for d in restated.values())}
            requests.append(backfill_request(repository.asset_graph, targets, tags))
            context.log.info(
                f"restating {days}: one backfill over "
                + ", ".join(f"{k.to_user_string()} x{len(v)}" for k, v in sorted(targets.items()))
            )
    reported = (state.reported_incomplete | {r.prefix for r in scan.incomplete}) - {d.prefix for d in scan.complete}
    next_state = WatchState(state.listing.advanced(scan.listed, now, SETTLE_SECONDS), tuple(pending), reported)
    return dg.SensorResult(
        run_requests=requests, cursor=next_state.to_cursor(), skip_reason=None if requests else reason
    )


@dg.sensor(
    name="lending_restatement_sensor",
    description=(
        "A corrected drop for a loaded business day launches one asset backfill over that day and everything "
        "downstream of it, including every later day of the day-chained loan book."
    ),
    asset_selection=PIPELINE,  # the sensor daemon only launches backfills for a sensor with an asset selection
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lending_restatement_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource) -> dg.SensorResult:
    return evaluate_restatement(context, landing)


# -- the daily deadline schedule ------------------------------------------------------------------------------------

lending_daily_job = dg.define_asset_job(
    "lending_daily",
    selection=PIPELINE,
    partitions_def=LENDING_PARTITIONS,
    description="One business day of the loan pipeline: the day's drop through raw, core and reporting.",
)
# The drop of a business day is due overnight; the schedule waits until 06:00 the next morning (business time).
DEADLINE_HOUR = 6


def deadline_day(at: datetime) -> date | None:
    """The business day whose deadline is the tick at ``at``: the last business day before the tick's date (in the
    business time zone); None before the lender's first day.

    Saturday morning's tick is Friday's deadline (though Friday's partition window stays open until Monday). The
    morning of a holiday is the deadline of the business day before it, and so is the morning after the holiday:
    the holiday has no drop and no partition, so that second tick finds the day done (or its run key used) and
    runs nothing new.
    """
    day = previous_business_day(at.astimezone(ZoneInfo(LENDING_PARTITIONS.timezone)).date())
    return day if day >= date.fromisoformat(LENDING_START) else None


def evaluate_daily_deadline(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    at: datetime = context.scheduled_execution_time
    business_day = deadline_day(at)
    if business_day is None:
        return dg.SkipReason(f"no business day of the lender before {at.date()}")
    day = business_day.isoformat()
    pipeline = _pipeline_keys(context)
    missing = [k for k in pipeline if day not in context.instance.get_materialized_partitions(k)]
    if not missing:
        return dg.SkipReason(f"{day} is already materialized (by the landing sensor)")
    if blockers := pipeline_in_flight(context):
        return dg.SkipReason(f"{day} is not materialized yet; {blockers[0]} is still in flight")
    # The run key is the day's: two ticks that share a deadline day (a holiday's and the morning after) run it once.
    return dg.RunRequest(run_key=f"deadline:{day}", partition_key=day, tags={"batch-platform/trigger": "deadline"})


@dg.schedule(
    name="lending_daily_schedule",
    job=lending_daily_job,
    # Tuesday to Saturday: the morning after each working weekday (a holiday's morning is the day before's deadline).
    cron_schedule=f"0 {DEADLINE_HOUR} * * 2-6",
    execution_timezone=LENDING_PARTITIONS.timezone,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The deadline for each business day: runs it at 06:00 the next morning unless it already ran.",
)
def lending_daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return evaluate_daily_deadline(context)
