"""Automation of the domain: sensors, schedules and the jobs they target. The composition root collects them."""

from datetime import timedelta

import dagster as dg

from assets.lending.tables import LENDING_TIMEZONE
from assets.platform_demo import DEMO_PARTITIONS
from sensors.lending import (
    lending_daily_job,
    lending_daily_schedule,
    lending_landing_sensor,
    lending_restatement_sensor,
)

all_sensors = [lending_landing_sensor, lending_restatement_sensor]
all_schedules = [lending_daily_schedule]
all_jobs = [lending_daily_job]

# Freshness, per group: the hours after a partition's window closes by which that partition must be materialized
# (partition-aware checks), and the per-asset policy Dagster's daemon evaluates. Business-day windows close at the
# next business day's 00:00 New York time: raw is due by 06:00, core by 08:00, reporting by 10:00.
FRESHNESS_DEADLINE_HOURS = {"raw": 6.0, "core": 8.0, "reporting": 10.0, "demo": 24.0}
DEFAULT_FRESHNESS_DEADLINE_HOURS = 24.0
FRESHNESS_POLICIES = {
    group: dg.FreshnessPolicy.cron(
        f"0 {int(hours)} * * 1-5", lower_bound_delta=timedelta(hours=hours), timezone=LENDING_TIMEZONE
    )
    for group, hours in FRESHNESS_DEADLINE_HOURS.items()
    if group != "demo"
}
FRESHNESS_POLICIES["demo"] = dg.FreshnessPolicy.cron(
    "0 0 * * *", lower_bound_delta=timedelta(hours=24), timezone=DEMO_PARTITIONS.timezone
)
# Other teams' assets until they declare their own: warn after a day without a materialization, fail after 36 h.
DEFAULT_FRESHNESS_POLICY = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=36), warn_window=timedelta(hours=24)
)
