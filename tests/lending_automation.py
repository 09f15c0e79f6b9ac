"""The loan pipeline's automation under test: its sensors and deadline schedule evaluated against a real Dagster
instance, a local landing zone of simulated drops and real raw loads (no Spark)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._core.definitions.sensor_definition import SensorExecutionData

from assets.lending.domain import lending
from assets.lending.landing import LandingZone, LandingZoneResource
from assets.lending.raw import raw_assets
from assets.lending.tables import LENDING_PARTITIONS
from batch_platform.alerts import LogFileAlerts
from batch_platform.lake import IcebergLakeResource
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource
from sensors.lending import (
    evaluate_daily_deadline,
    lending_daily_job,
    lending_daily_schedule,
    lending_landing_sensor,
    lending_restatement_sensor,
)

DEFS = dg.Definitions(
    assets=lending.registered_assets(),
    sensors=[lending_landing_sensor, lending_restatement_sensor],
    schedules=[lending_daily_schedule],
    jobs=[lending_daily_job],
    # The sensors never run the assets here; the repository only needs its resource keys bound.
    resources={
        "lake": IcebergLakeResource(),
        "spark": SparkResource(),
        "landing": LandingZoneResource(),
        "pii": PiiTokenizer(key="sensor-tests-never-tokenize"),
        "alerts": LogFileAlerts(),
    },
)
REPOSITORY = DEFS.get_repository_def()
PIPELINE_KEYS = set(REPOSITORY.asset_graph.get_all_asset_keys())


def at(day: date, hour: int) -> datetime:
    """``hour`` o'clock on ``day`` in the lender's time zone."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(LENDING_PARTITIONS.timezone))


class LendingAutomation:
    """A real instance (the caller's), a local landing zone and lake under ``root``, alerts to a file."""

    def __init__(self, root: Path, instance: dg.DagsterInstance) -> None:
        self.root = root
        self.instance = instance
        self.landing = LandingZone.local(root / "landing")
        self.lake = IcebergLakeResource(data_dir=str(root / "lake"))
        self.alerts_file = root / "alerts.jsonl"
        self.resources = {
            "landing": LandingZoneResource(uri=str(root / "landing")),
            "alerts": LogFileAlerts(path=str(self.alerts_file)),
        }

    def alerts(self) -> list[dict[str, Any]]:
        if not self.alerts_file.exists():
            return []
        return [json.loads(line) for line in self.alerts_file.read_text().splitlines()]

    def tick(self, sensor: dg.SensorDefinition, cursor: str | None = None) -> SensorExecutionData:
        """One tick as the sensor daemon evaluates it, with Dagster's validation of what the sensor returns."""
        context = dg.build_sensor_context(
            instance=self.instance, cursor=cursor, repository_def=REPOSITORY, resources=self.resources
        )
        return sensor.evaluate_tick(context)

    def deadline(self, day: date) -> dg.RunRequest | dg.SkipReason:
        """The deadline schedule's tick at 06:00 New York time on ``day``."""
        context = dg.build_schedule_context(
            instance=self.instance, scheduled_execution_time=at(day, 6), repository_def=REPOSITORY
        )
        return evaluate_daily_deadline(context)

    def load_raw(self, first: date, last: date) -> None:
        """Run the real raw load over [first, last], as the pipeline would."""
        result = dg.materialize(
            raw_assets,
            instance=self.instance,
            resources={"lake": self.lake, "landing": self.resources["landing"]},
            tags={"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)},
        )
        assert result.success

    def mark_built(self, keys: set[dg.AssetKey], days: list[date]) -> None:
        """Record downstream partitions as materialized, so the sensors see what exists (no Spark needed here)."""
        for key in keys:
            for day in days:
                self.instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=str(day)))


def single_run_request(result: SensorExecutionData) -> dg.RunRequest:
    assert len(result.run_requests or []) == 1, result.skip_message
    return (result.run_requests or [])[0]


def backfill_targets(request: dg.RunRequest) -> dict[dg.AssetKey, list[str]]:
    """The partition keys per asset of a request that launches an asset backfill."""
    subset = request.asset_graph_subset
    assert subset is not None, "expected an asset backfill request"
    return {k: sorted(s.get_partition_keys()) for k, s in subset.partitions_subsets_by_asset_key.items()}
