"""The composition root: the one place that joins the framework with the domain assets, resources and sensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg

from assets import all_assets, all_lake_tables
from batch_platform.failure_sensor import build_run_failure_alert_sensor
from batch_platform.freshness import apply_freshness_policies, build_partition_freshness_checks
from batch_platform.lake import build_maintenance_job, build_maintenance_schedule
from batch_platform.pool_alerts import build_blocked_pool_alert_sensor
from resources import deployment_environment, resources_for
from sensors import (
    DEFAULT_FRESHNESS_DEADLINE_HOURS,
    DEFAULT_FRESHNESS_POLICY,
    FRESHNESS_DEADLINE_HOURS,
    FRESHNESS_POLICIES,
    all_jobs,
    all_schedules,
    all_sensors,
)

DEMO_SCALE = "0.2"  # about 200 loan applications a business day: a lively book that materializes in minutes


def build_definitions(env: str | None = None) -> dg.Definitions:
    freshness_checks, freshness_sensor = build_partition_freshness_checks(
        all_assets,
        deadline_hours_by_group=FRESHNESS_DEADLINE_HOURS,
        default_deadline_hours=DEFAULT_FRESHNESS_DEADLINE_HOURS,
    )
    maintenance = build_maintenance_job(all_lake_tables)
    defs = dg.Definitions(
        assets=all_assets,
        asset_checks=freshness_checks,
        sensors=[*all_sensors, build_run_failure_alert_sensor(), build_blocked_pool_alert_sensor(), freshness_sensor],
        schedules=[*all_schedules, build_maintenance_schedule(maintenance)],
        jobs=[*all_jobs, maintenance],
        resources=resources_for(env or deployment_environment()),
        # The steps of a run share one process and so one Spark session: the default multiprocess executor would
        # start a JVM per step (minutes per run on a small machine), and Spark parallelizes within a step anyway.
        executor=dg.in_process_executor,
    )
    # One policy for every materializable asset, group overrides on top (evaluated per asset by the daemon).
    return apply_freshness_policies(defs, default=DEFAULT_FRESHNESS_POLICY, by_group=FRESHNESS_POLICIES)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()


def domain_commands() -> dict[str, Callable[[Sequence[str]], int]]:
    """Subcommands of ``batch-platform`` that belong to a domain."""
    from assets.lending.simulator import main as simulate

    return {"simulate": simulate}


def prepare_demo(days: int) -> None:
    """Land what the demo's assets read: the simulated lender's first ``days`` business days of drops."""
    from assets.lending.simulator import main as simulate
    from assets.lending.tables import LENDING_PARTITIONS

    keys = LENDING_PARTITIONS.get_partition_keys()[:days]
    simulate(["--start", keys[0], "--end", keys[-1], "--scale", DEMO_SCALE])
