"""The loan domain as registered with the platform (one line in the composition root's ``DOMAINS``).

Everything of the domain is declared here: its assets from raw to reporting, its automation (``sensors/lending.py``),
the landing zone resource, the freshness deadlines of its layers, the ``batch-platform simulate`` tool and the demo's
landing drops. The simulator is a tool: neither the definitions nor this module import it until a command runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from assets.lending import DOMAIN
from assets.lending.core import core_assets
from assets.lending.dataset_specs import lending_spec_tables
from assets.lending.landing import LandingZoneResource
from assets.lending.raw import raw_assets
from assets.lending.reporting import reporting_assets
from assets.lending.tables import (
    CORE_TABLES,
    LENDING_PARTITIONS,
    LENDING_TIMEZONE,
    RAW_QUARANTINE,
    RAW_TABLES,
    REPORTING_MERCHANT_PERFORMANCE,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
)
from batch_platform.domain import Domain
from batch_platform.freshness import deadline_policies
from resources import AWS_REGION_ENV, LANDING_URI_ENV, S3_ENDPOINT_ENV
from sensors.lending import (
    lending_daily_job,
    lending_daily_schedule,
    lending_landing_sensor,
    lending_restatement_sensor,
)

lending_assets = [*raw_assets, *core_assets, *reporting_assets]
# Every lake table an asset writes, for table maintenance (the Domain refuses an asset writing one not listed).
lending_lake_tables = [
    *RAW_TABLES.values(),
    RAW_QUARANTINE,
    *CORE_TABLES,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
    REPORTING_MERCHANT_PERFORMANCE,
    *lending_spec_tables,
]
# The hours after a partition's window closes by which it must be materialized. Business-day windows close at the
# next business day's 00:00 New York time: raw is due by 06:00, core by 08:00, reporting by 10:00.
DEADLINE_HOURS = {"raw": 6.0, "core": 8.0, "reporting": 10.0}
DEMO_SCALE = "0.2"  # about 200 loan applications a business day: a lively book that materializes in minutes


def landing_resources(env: str) -> dict[str, Any]:
    """The landing zone of the drops: one configuration for the sensors' listing and the raw load."""
    if env == "PROD":
        # The landing bucket is reached with the warehouse's S3 settings (same endpoint override and region).
        return {
            "landing": LandingZoneResource(
                uri=dg.EnvVar(LANDING_URI_ENV), s3_endpoint=dg.EnvVar(S3_ENDPOINT_ENV), region=dg.EnvVar(AWS_REGION_ENV)
            )
        }
    return {"landing": LandingZoneResource()}  # <data dir>/landing, where `batch-platform simulate` writes


def simulate(argv: Sequence[str]) -> int:
    """Write the simulated lender's landing drops of a date range (or restate one day)."""
    from assets.lending.simulator import main

    return main(argv)


def prepare_demo(days: int) -> None:
    """Land what the demo's assets read: the simulated lender's first ``days`` business days of drops."""
    keys = LENDING_PARTITIONS.get_partition_keys()[:days]
    simulate(["--start", keys[0], "--end", keys[-1], "--scale", DEMO_SCALE])


lending = Domain(
    name=DOMAIN,
    assets=lending_assets,
    sensors=[lending_landing_sensor, lending_restatement_sensor],
    schedules=[lending_daily_schedule],
    jobs=[lending_daily_job],
    resources=landing_resources,
    deadline_hours=DEADLINE_HOURS,
    freshness_policies=deadline_policies(DEADLINE_HOURS, timezone=LENDING_TIMEZONE),
    commands={"simulate": simulate},
    prepare_demo=prepare_demo,
    lake_tables=lending_lake_tables,
)
