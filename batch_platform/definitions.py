"""The composition root: the one place that joins the framework with the domain assets, resources and sensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg

from assets import all_assets
from batch_platform.failure_sensor import build_run_failure_alert_sensor
from resources import deployment_environment, resources_for
from sensors import all_jobs, all_schedules, all_sensors

DEMO_SCALE = "0.2"  # about 200 loan applications a business day: a lively book that materializes in minutes


def build_definitions(env: str | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=all_assets,
        sensors=[*all_sensors, build_run_failure_alert_sensor()],
        schedules=all_schedules,
        jobs=all_jobs,
        resources=resources_for(env or deployment_environment()),
    )


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
